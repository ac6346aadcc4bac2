-- Shared start of the mlops.dev health checks (prepended to each kind's check when rendered into
-- argocd-cm): waits for the operator to observe the current generation, indexes the conditions.
local hs = {status = "Progressing", message = "Waiting for the operator"}
if obj.status == nil or obj.status.conditions == nil then return hs end
if obj.status.observedGeneration ~= nil and obj.metadata.generation ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  return hs
end
local c = {}
for _, cond in ipairs(obj.status.conditions) do c[cond.type] = cond end
local function msg(cond) return (cond.reason or "") .. ((cond.message and (": " .. cond.message)) or "") end
