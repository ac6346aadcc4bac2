-- Argo CD health of a mlops.dev DriftPolicy (resource.customizations.health.mlops.dev_DriftPolicy)
-- Drift detected (of the inputs or of live quality) is the policy working (it retrains or alerts), not an
-- unhealthy resource.
-- (after _prelude.lua: `c` holds the conditions by type, `msg` formats one)
if c.Ready ~= nil and c.Ready.status == "False" then
  return {status = "Degraded", message = msg(c.Ready)}
end
if c.Ready ~= nil and c.Ready.status == "True" then
  if c.Drifted ~= nil and c.Drifted.status == "True" then
    return {status = "Healthy", message = "Drift detected: " .. (c.Drifted.message or "")}
  end
  if c.PerformanceDrifted ~= nil and c.PerformanceDrifted.status == "True" then
    return {status = "Healthy", message = "Live quality degraded: " .. (c.PerformanceDrifted.message or "")}
  end
  return {status = "Healthy", message = msg(c.Drifted or c.Ready)}
end
return {status = "Progressing", message = msg(c.Ready or {})}
