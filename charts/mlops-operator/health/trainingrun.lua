-- Argo CD health of a mlops.dev TrainingRun (resource.customizations.health.mlops.dev_TrainingRun)
local hs = {status = "Progressing", message = "Waiting for the operator"}
if obj.status == nil or obj.status.conditions == nil then return hs end
if obj.status.observedGeneration ~= nil and obj.metadata.generation ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  return hs
end
local c = {}
for _, cond in ipairs(obj.status.conditions) do c[cond.type] = cond end
local function msg(cond) return (cond.reason or "") .. ((cond.message and (": " .. cond.message)) or "") end
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
