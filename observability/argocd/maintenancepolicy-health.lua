-- Argo CD health of a tuneloop.dev MaintenancePolicy, from its status conditions.
-- Key in argocd-cm: resource.customizations.health.tuneloop.dev_MaintenancePolicy (docs/argocd.md).
local hs = {}
local function condition(status, type_)
  if status.conditions == nil then return nil end
  for _, c in ipairs(status.conditions) do
    if c.type == type_ and c.status == "True" then return c end
  end
  return nil
end
local function text(c, fallback)
  return (c.reason or fallback) .. ": " .. (c.message or "")
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Tuneloop operator to pick up the MaintenancePolicy"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local stalled = condition(status, "Stalled")
local suspended = condition(status, "Suspended")
local degraded = condition(status, "Degraded")
local ready = condition(status, "Ready")
local retraining = status.activeJob ~= nil and status.activeJob ~= ""
if stalled ~= nil then
  hs.status = "Degraded"
  hs.message = text(stalled, "Stalled")
elseif suspended ~= nil or (obj.spec ~= nil and obj.spec.suspend == true) then
  hs.status = "Suspended"
  hs.message = "Suspended: no evaluation or retraining runs"
elseif degraded ~= nil and not retraining then
  -- The model in production got worse and nothing is fixing it.
  hs.status = "Degraded"
  hs.message = text(degraded, "Degraded") .. " (no retrain running)"
elseif degraded ~= nil then
  hs.status = "Progressing"
  hs.message = "Model degraded; retraining in FineTuneJob " .. status.activeJob
elseif ready ~= nil then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  if retraining then hs.message = hs.message .. "; retraining in FineTuneJob " .. status.activeJob end
else
  hs.status = "Progressing"
  hs.message = "Waiting for the first evaluation"
end
return hs
