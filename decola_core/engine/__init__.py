"""Running work on one or many processes: distributed set-up and launching."""
