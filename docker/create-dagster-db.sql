-- Dagster's instance storage gets its own database next to the application's.
CREATE DATABASE dagster;
