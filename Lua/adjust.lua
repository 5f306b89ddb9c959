--[[
  An operator's change to an account: set balances to given values or credit
  amounts to them, with its statement in the same execution. Creates the
  account when it does not exist.

  Input:
    KEYS[1]  account:{ID}
    KEYS[2]  statements
    ARGV[1]  "set" or "credit"
    ARGV[2]  operation id (for the statement)
    ARGV[3]  account id
    ARGV[4..] category, cents, category, cents, ... (integers; credits > 0)

  Output:
    {entryid, "CAT:after,CAT:after"} or an error reply when an existing
    balance is not an integer
]]
local account, statements = KEYS[1], KEYS[2]
local kind = ARGV[1]
if kind ~= 'set' and kind ~= 'credit' then
  return redis.error_reply('ERR adjust kind must be set or credit')
end
local changes, balances = {}, {}
for i = 4, #ARGV, 2 do
  local category, cents = ARGV[i], ARGV[i + 1]
  local after
  if kind == 'set' then
    redis.call('HSET', account, category, cents)
    after = cents
  else
    local current = redis.call('HGET', account, category)
    if current and not string.match(current, '^%-?%d+$') then
      return redis.error_reply('ERR balance of ' .. category .. ' is not an integer')
    end
    after = string.format('%d', redis.call('HINCRBY', account, category, cents))
  end
  changes[#changes + 1] = category .. ':' .. cents
  balances[#balances + 1] = category .. ':' .. after
end
local balanceText = table.concat(balances, ',')
local entry = redis.call('XADD', statements, '*',
  'type', kind,
  'id', ARGV[2],
  'account', ARGV[3],
  'code', '00',
  'amount', '0',
  'debits', '',
  'credits', table.concat(changes, ','),
  'balances', balanceText,
  'reason', '')
return {entry, balanceText}
