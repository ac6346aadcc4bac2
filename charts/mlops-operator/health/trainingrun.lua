-- Argo CD health of a mlops.dev TrainingRun (resource.customizations.health.mlops.dev_TrainingRun)
-- (after _prelude.lua: `c` holds the conditions by type, `msg` formats one)
if c.Ready ~= nil and c.Ready.reason == "InvalidSpec" then
  return {status = "Degraded", message = msg(c.Ready)}
end
if c.Ready ~= nil and c.Ready.reason == "Suspended" then
  return {status = "Suspended", message = msg(c.Ready)}
end
if c.Succeeded ~= nil and c.Succeeded.status == "False" then
  return {status = "Degraded", message = msg(c.Succeeded)}
end
if c.Succeeded ~= nil and c.Succeeded.status == "True" then
  if c.GatesPassed ~= nil and c.GatesPassed.status == "False" then
    return {status = "Degraded", message = "Gates failed: " .. (c.GatesPassed.message or "")}
  end
  return {status = "Healthy", message = msg(c.Ready or c.Succeeded)}
end
if c.Ready ~= nil and c.Ready.status == "False" then
  return {status = "Degraded", message = msg(c.Ready)}
end
return {status = "Progressing", message = msg(c.Succeeded or c.Ready)}
