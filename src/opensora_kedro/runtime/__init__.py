"""Where jobs run: the launcher and its workers, process groups, ColossalAI Booster plugins
(and what runs on a CPU), and a job's MLflow tracking."""
