"""The experiment runner: the experiment (record, builders, steps), evaluation, train; io/ (run
directory, checkpoints, logs), commands/ (eval, compare, gradcheck, graph, export, runs), sweep/.
It never prints: everything it has to say is an event (events.Event) for the CLI to draw."""
