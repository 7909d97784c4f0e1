-- Argo CD health of a tuneloop.dev MaintenancePolicy, from the status its controller writes
-- (operator/tuneloop/operator/policy/decide.py): phase, activeJob and the conditions Ready,
-- Degraded, Retraining and Stalled.
-- Key in argocd-cm: resource.customizations.health.tuneloop.dev_MaintenancePolicy (docs/argocd.md).
local hs = {}
local function find(status, type_)
  if status.conditions == nil then return nil end
  for _, c in ipairs(status.conditions) do
    if c.type == type_ then return c end
  end
  return nil
end
local function true_(c)
  if c ~= nil and c.status == "True" then return c end
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

local stalled = true_(find(status, "Stalled"))
local degraded = true_(find(status, "Degraded"))
local ready = find(status, "Ready")
local retraining_condition = true_(find(status, "Retraining"))
-- What runs, in the operator's words ("<policy>-r4 training"), else the job's name.
local active = nil
if retraining_condition ~= nil and retraining_condition.message ~= nil and retraining_condition.message ~= "" then
  active = retraining_condition.message
elseif status.activeJob ~= nil and status.activeJob ~= "" then
  active = status.activeJob
end
local guards = obj.spec ~= nil and obj.spec.guards or nil
local suspended = status.phase == "Suspended" or (guards ~= nil and guards.suspend == true)
if stalled ~= nil then
  hs.status = "Degraded"
  hs.message = text(stalled, "Stalled")
elseif suspended then
  hs.status = "Suspended"
  hs.message = "Suspended by spec.guards.suspend: no retraining starts (running revisions finish)"
elseif degraded ~= nil and active == nil then
  -- The model in production got worse and nothing is fixing it; Ready's message says what holds the retrain.
  hs.status = "Degraded"
  hs.message = text(degraded, "Degraded") .. " (no retrain running)"
  if ready ~= nil and ready.message ~= nil and ready.message ~= "" then hs.message = hs.message .. "; " .. ready.message end
elseif degraded ~= nil then
  hs.status = "Progressing"
  hs.message = "Model degraded; retraining: " .. active
elseif true_(ready) ~= nil then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  if active ~= nil then hs.message = hs.message .. "; retraining: " .. active end
elseif active ~= nil then
  hs.status = "Progressing"
  hs.message = "No champion yet; training the first revision: " .. active
else
  hs.status = "Progressing"
  hs.message = "Waiting for a champion"
  if ready ~= nil and ready.message ~= nil and ready.message ~= "" then hs.message = hs.message .. ": " .. ready.message end
end
return hs
