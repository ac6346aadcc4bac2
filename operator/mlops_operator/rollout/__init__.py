"""Pure logic of ModelDeployments: spec checks, model version resolution, the rollout decisions."""
