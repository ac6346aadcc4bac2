-- Argo CD health of a mlops.dev DriftPolicy (resource.customizations.health.mlops.dev_DriftPolicy)
-- Drift detected is the policy working (it retrains or alerts), not an unhealthy resource.
local hs = {status = "Progressing", message = "Waiting for the operator"}
if obj.status == nil or obj.status.conditions == nil then return hs end
if obj.status.observedGeneration ~= nil and obj.metadata.generation ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  return hs
end
local c = {}
for _, cond in ipairs(obj.status.conditions) do c[cond.type] = cond end
local function msg(cond) return (cond.reason or "") .. ((cond.message and (": " .. cond.message)) or "") end
if c.Ready ~= nil and c.Ready.status == "False" then
  return {status = "Degraded", message = msg(c.Ready)}
end
if c.Ready ~= nil and c.Ready.status == "True" then
  if c.Drifted ~= nil and c.Drifted.status == "True" then
    return {status = "Healthy", message = "Drift detected: " .. (c.Drifted.message or "")}
  end
  return {status = "Healthy", message = msg(c.Drifted or c.Ready)}
end
return {status = "Progressing", message = msg(c.Ready or {})}
