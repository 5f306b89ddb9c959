--[[
  Balance inquiry: every category of one account, read-only. No lock is
  taken (one HGETALL is atomic) and nothing is written.

  Input:
    KEYS[1]  account:{ID}   HASH category -> balance in cents

  Output (array):
    {"UNKNOWN"}                                   the account does not exist
    {"BALANCES", category, cents, category, cents, ...}
]]
local balances = redis.call('HGETALL', KEYS[1])
if #balances == 0 then
  return {'UNKNOWN'}
end
local reply = {'BALANCES'}
for i = 1, #balances do
  reply[i + 1] = balances[i]
end
return reply
