"""Pure logic of TrainingRuns: spec checks, the Job to build, results and gates."""
