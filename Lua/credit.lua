--[[
  Credit one line of an employer's benefit order, at most once ever: the
  line's record and the credit it guards are one execution.

  Input:
    KEYS[1]  account:{ID}            HASH category -> balance in cents
    KEYS[2]  orders:{ID}             HASH "ORDER/LINE" -> the line's record,
                                     CATEGORY:CENTS|ENTRY (ENTRY: its ledger
                                     entry), then "|R:CENTS:ENTRY" once reverted
                                     (revert.lua): a reverted line stays credited
    KEYS[3]  statements              STREAM the ledger (statements:{T} on a cluster)
    ARGV[1]  order id
    ARGV[2]  line id
    ARGV[3]  account id
    ARGV[4]  category
    ARGV[5]  cents (an integer > 0)
    ARGV[6]  employer id, or ""
    ARGV[7]  seconds KEYS[2] outlives the account's latest order credit (how
             long an order may be sent again and still credit nothing)

  Output (array):
    {"CREDITED", entryid, balance}   credited now; balance: the category's after
    {"ALREADY", entryid}             this order's line was credited before, with
                                     this body: nothing now
    {"CONFLICT", "CATEGORY:CENTS"}   this order's line was credited with another
                                     body (shown): nothing now
    {"UNKNOWN"}                      no such account: nothing credited
  An error reply when the category's balance is not an integer.
]]
local account, orders, statements = KEYS[1], KEYS[2], KEYS[3]
local order, line, category, cents = ARGV[1], ARGV[2], ARGV[4], ARGV[5]
local field = order .. '/' .. line
local body = category .. ':' .. cents

local prior = redis.call('HGET', orders, field)
if prior then
  local priorBody, entry = string.match(prior, '^([^|]*)|([^|]*)')
  if priorBody ~= body then return {'CONFLICT', priorBody or prior} end
  return {'ALREADY', entry}
end
if redis.call('EXISTS', account) == 0 then return {'UNKNOWN'} end
local current = redis.call('HGET', account, category)
if current and not string.match(current, '^%-?%d+$') then
  return redis.error_reply('ERR balance of ' .. category .. ' is not an integer')
end

local after = string.format('%d', redis.call('HINCRBY', account, category, cents))
local entry = redis.call('XADD', statements, '*',
  'type', 'credit',
  'id', field,
  'account', ARGV[3],
  'code', '00',
  'amount', cents,
  'debits', '',
  'credits', body,
  'balances', category .. ':' .. after,
  'reason', '',
  'order', order,
  'line', line,
  'employer', ARGV[6])
redis.call('HSET', orders, field, body .. '|' .. entry)
redis.call('EXPIRE', orders, ARGV[7])
return {'CREDITED', entry, after}
