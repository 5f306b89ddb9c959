import AuthorizerCore
import NIOCore
import NIOConcurrencyHelpers
import RedisWire

/// Checks that Redis really publishes the keyevent notifications the lock
/// waits depend on: subscribes, deletes one probe key and lets another
/// expire, and waits for both events. Works for a user without CONFIG.
public enum NotificationProbe {
    public struct Missing: Error, CustomStringConvertible {
        public let events: [String]
        public var description: String {
            "redis did not publish keyevent notifications for \(events.joined(separator: " and ")); the account lock waits need them. Set `notify-keyspace-events Egxt` in redis.conf (E: keyevent channels, g: del, x: expired; t: xadd, which the replayer listens to on a Redis Cluster)."
        }
    }

    /// `servedHere` tells whether this node serves a key (a cluster master
    /// serves some slots only): the probe keys are picked among those it serves.
    public static func run(endpoint: RedisEndpoint, redis: RedisClient, timeout: TimeAmount = .seconds(2), servedHere: (String) -> Bool = { _ in true }) -> EventLoopFuture<Void> {
        let loop = redis.eventLoop
        let nonce = String(UInt64.random(in: .min ... .max), radix: 36)
        func key(_ kind: String) -> String {
            var attempt = 0
            while true {
                let key = Keys.lock("probe-\(kind)-\(nonce)-\(attempt)")
                if servedHere(key) || attempt >= 1_000_000 { return key }
                attempt += 1
            }
        }
        let deletedKey = key("del")
        let expiredKey = key("exp")
        let deleted = loop.makePromise(of: Void.self)
        let expired = loop.makePromise(of: Void.self)
        let channels = Keys.keyEventChannels(database: endpoint.database)
        let subscriber = RedisSubscriber(endpoint: endpoint, eventLoop: loop) { channel, payload in
            if channel == channels[0] && payload == deletedKey { deleted.succeed() }
            if channel == channels[1] && payload == expiredKey { expired.succeed() }
        }
        let deletedSeen = NIOLockedValueBox(false)
        let expiredSeen = NIOLockedValueBox(false)
        deleted.futureResult.whenSuccess { deletedSeen.withLockedValue { $0 = true } }
        expired.futureResult.whenSuccess { expiredSeen.withLockedValue { $0 = true } }
        let timer = loop.scheduleTask(in: timeout) {
            var missing: [String] = []
            if !(deletedSeen.withLockedValue { $0 }) { missing.append("del") }
            if !(expiredSeen.withLockedValue { $0 }) { missing.append("expired") }
            let error = Missing(events: missing.isEmpty ? ["del", "expired"] : missing)
            deleted.fail(error)
            expired.fail(error)
        }

        let probe = subscriber.subscribe(channels).flatMap {
            redis.send(RedisCommand("SET", deletedKey, "probe")).flatMap { _ in
                redis.send(RedisCommand("DEL", deletedKey))
            }.flatMap { _ in
                redis.send(RedisCommand("SET", expiredKey, "probe", "PX", "1"))
            }.flatMap { _ in
                // Reading the key after its TTL expires it on access, which
                // publishes `expired` without waiting for the expiry cycle.
                loop.scheduleTask(in: .milliseconds(5)) {}.futureResult
            }.flatMap {
                redis.send(RedisCommand("GET", expiredKey))
            }
        }.flatMap { _ in
            deleted.futureResult.and(expired.futureResult).map { _ in }
        }
        probe.whenComplete { _ in
            timer.cancel()
            subscriber.close()
        }
        return probe
    }
}
