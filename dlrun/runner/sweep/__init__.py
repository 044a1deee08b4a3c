"""`dlrun sweep`: the search space (space), the Optuna study (study), one trial (trial), the
reports (report), the driver that runs them (driver) and its worker processes (worker)."""
