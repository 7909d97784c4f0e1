-- Argo CD health of a tuneloop.dev FineTuneJob, from the status the operator writes.
-- Key in argocd-cm: resource.customizations.health.tuneloop.dev_FineTuneJob (docs/argocd.md).
local hs = {}
local function condition(status, type_)
  if status.conditions == nil then return nil end
  for _, c in ipairs(status.conditions) do
    if c.type == type_ and c.status == "True" then return c end
  end
  return nil
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Tuneloop operator to pick up the FineTuneJob"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local phase = status.phase
local message = status.message or ""
local stalled = condition(status, "Stalled")
if phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = "Suspended (spec.runPolicy.suspend); " .. message
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = (status.reason or "Failed") .. ": " .. message
elseif stalled ~= nil then
  -- e.g. Pending with the scheduler refusing the pod for too long, or the image not pulling.
  hs.status = "Degraded"
  hs.message = (stalled.reason or "Stalled") .. ": " .. (stalled.message or message)
elseif phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = "Training succeeded; " .. message
else
  -- Pending, Queued, Running: on its way.
  hs.status = "Progressing"
  hs.message = phase .. ": " .. message
end
return hs
