--[[
  Revert one credited line of a benefit order, for an operational error
  only: debit back at most what is still unspent in the line's category,
  once; the line stays credited for its order (sent again, it credits
  nothing).

  Input:
    KEYS[1]  account:{ID}            HASH category -> balance in cents
    KEYS[2]  orders:{ID}             HASH "ORDER/LINE" -> CATEGORY:CENTS|ENTRY,
                                     then "|R:CENTS:ENTRY" once reverted
    KEYS[3]  statements              STREAM the ledger (statements:{T} on a cluster)
    ARGV[1]  order id
    ARGV[2]  line id
    ARGV[3]  account id
    ARGV[4]  reason: duplicate, wrong-beneficiary or over-credit
    ARGV[5]  who reverts (the entry's `by`)
    ARGV[6]  operation id (the entry's id)

  Output (array):
    {"REVERTED", entryid, cents, balance}  debited back `cents` now (0 when the
                                           category has nothing left); balance:
                                           the category's after
    {"ALREADY", entryid, cents}            reverted before: nothing now
    {"UNKNOWN"}                            the account has no such line credited
  An error reply when the category's balance is not an integer.
]]
local account, orders, statements = KEYS[1], KEYS[2], KEYS[3]
local field = ARGV[1] .. '/' .. ARGV[2]
local record = redis.call('HGET', orders, field)
if not record then return {'UNKNOWN'} end
local category, cents, rest = string.match(record, '^([^:|]+):(%d+)|[^|]*(.*)$')
if not category then return redis.error_reply('ERR order line record is malformed: ' .. record) end
local revertedCents, revertedEntry = string.match(rest, '^|R:(%d+):(.*)$')
if revertedCents then return {'ALREADY', revertedEntry, revertedCents} end

local current = redis.call('HGET', account, category) or '0'
if not string.match(current, '^%-?%d+$') then
  return redis.error_reply('ERR balance of ' .. category .. ' is not an integer')
end
-- What is still unspent of the line: never more than it credited, never
-- below what the category holds.
local back = math.min(tonumber(cents), math.max(tonumber(current), 0))
local after = current
local debits = ''
if back > 0 then
  after = string.format('%d', redis.call('HINCRBY', account, category, -back))
  debits = category .. ':' .. string.format('%d', back)
end
local entry = redis.call('XADD', statements, '*',
  'type', 'revert',
  'id', ARGV[6],
  'account', ARGV[3],
  'code', '00',
  'amount', string.format('%d', back),
  'debits', debits,
  'credits', '',
  'balances', category .. ':' .. after,
  'reason', ARGV[4],
  'order', ARGV[1],
  'line', ARGV[2],
  'by', ARGV[5])
redis.call('HSET', orders, field, record .. '|R:' .. string.format('%d', back) .. ':' .. entry)
return {'REVERTED', entry, string.format('%d', back), after}
