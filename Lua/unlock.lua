--[[
  Release an account lock, but only for the holder that took it
  (compare-and-delete): a late unlock never frees somebody else's lock.
  The DEL publishes __keyevent@<db>__:del, which wakes the waiters.

  Input:
    KEYS[1]  lock:{ID}
    ARGV[1]  the token the caller locked with

  Output:
    1 when the lock was released, 0 when the caller no longer held it
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
