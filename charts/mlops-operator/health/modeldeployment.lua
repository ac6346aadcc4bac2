-- Argo CD health of a mlops.dev ModelDeployment (resource.customizations.health.mlops.dev_ModelDeployment)
-- A rolled-back candidate while the stable revision serves is Healthy (Available=True, not Degraded):
-- Argo CD does not get stuck in Degraded as it does with aborted Argo Rollouts. A pinned version
-- that was rejected is Degraded (Git asks for a version that is not serving).
-- (after _prelude.lua: `c` holds the conditions by type, `msg` formats one)
if c.Ready ~= nil and c.Ready.reason == "InvalidSpec" then
  return {status = "Degraded", message = msg(c.Ready)}
end
if c.Degraded ~= nil and c.Degraded.status == "True" then
  return {status = "Degraded", message = msg(c.Degraded)}
end
if c.Progressing ~= nil and c.Progressing.status == "True" then
  return {status = "Progressing", message = msg(c.Progressing)}
end
if c.Available ~= nil and c.Available.status == "True" then
  local note = ""
  if c.Progressing ~= nil and c.Progressing.reason == "RolledBack" then
    note = " (the last candidate was rolled back: " .. (c.Progressing.message or "") .. ")"
  end
  return {status = "Healthy", message = "Serving the stable revision" .. note}
end
return {status = "Progressing", message = msg(c.Ready or c.Available or {})}
