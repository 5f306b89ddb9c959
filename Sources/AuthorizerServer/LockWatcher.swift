import AuthorizerCore
import Logging
import NIOCore
import RedisWire

/// Wakes requests waiting for an account lock when Redis publishes that the
/// lock key was deleted or expired (`__keyevent@<db>__:del` / `:expired`).
///
/// One subscriber connection per process. The keyevent channels are
/// subscribed only while at least one request waits, and unsubscribed when
/// the last waiter leaves. The same connection carries the rules-changed
/// channel for the whole life of the process.
public final class LockWatcher: Sendable {
    private let registry: WaiterRegistry
    private let subscriber: RedisSubscriber

    public init(endpoint: RedisEndpoint, eventLoop: EventLoop, logger: Logger, metrics: ServerMetrics = .disabled, onRulesChanged: @escaping @Sendable () -> Void) {
        let channels = Keys.keyEventChannels(database: endpoint.database)
        let registry = WaiterRegistry(eventLoop: eventLoop, channels: channels)
        let subscriber = RedisSubscriber(
            endpoint: endpoint,
            eventLoop: eventLoop,
            logger: logger,
            onMessage: { channel, payload in
                if channel == Keys.rulesChangedChannel {
                    onRulesChanged()
                } else if channels.contains(channel) {
                    registry.keyReleased(payload)
                }
            },
            onResubscribed: {
                metrics.redisReconnected(.subscriber)
                // Events published while the link was down are lost: let
                // every waiter look at its lock again.
                registry.wakeAll()
                onRulesChanged()
            }
        )
        registry.subscriber = subscriber
        self.registry = registry
        self.subscriber = subscriber
    }

    /// Subscribes to the rules-changed channel for the life of the process.
    public func start() -> EventLoopFuture<Void> {
        subscriber.subscribe([Keys.rulesChangedChannel])
    }

    /// Registers `wake` to run on `loop` whenever `lockKey` is released. The
    /// future completes once the keyevent subscription is live, so an unlock
    /// that happens after it completes is never missed.
    func register(lockKey: String, on loop: EventLoop, wake: @escaping @Sendable () -> Void) -> EventLoopFuture<WaiterRegistry.Ticket> {
        registry.register(lockKey: lockKey, on: loop, wake: wake).hop(to: loop)
    }

    func unregister(_ ticket: WaiterRegistry.Ticket) {
        registry.unregister(ticket)
    }

    public func close() {
        subscriber.close()
    }
}

/// The waiters, kept on the subscriber's event loop.
final class WaiterRegistry: @unchecked Sendable {
    struct Ticket: Sendable {
        let lockKey: String
        let id: UInt64
    }

    private struct Waiter {
        let loop: EventLoop
        let wake: @Sendable () -> Void
    }

    private struct State {
        var waiters: [String: [UInt64: Waiter]] = [:]
        var count = 0
        var nextID: UInt64 = 0
        var subscription: EventLoopFuture<Void>?
    }

    let eventLoop: EventLoop
    private let channels: [String]
    private let state: NIOLoopBoundBox<State>
    /// Set once, before any use, by LockWatcher.init.
    var subscriber: RedisSubscriber?

    init(eventLoop: EventLoop, channels: [String]) {
        self.eventLoop = eventLoop
        self.channels = channels
        self.state = NIOLoopBoundBox.makeBoxSendingValue(State(), eventLoop: eventLoop)
    }

    func register(lockKey: String, on loop: EventLoop, wake: @escaping @Sendable () -> Void) -> EventLoopFuture<Ticket> {
        eventLoop.flatSubmit {
            let id = self.state.value.nextID
            self.state.value.nextID += 1
            self.state.value.waiters[lockKey, default: [:]][id] = Waiter(loop: loop, wake: wake)
            self.state.value.count += 1
            let ticket = Ticket(lockKey: lockKey, id: id)
            if let subscription = self.state.value.subscription {
                return subscription.map { ticket }
            }
            let subscription = self.subscriber!.subscribe(self.channels)
            self.state.value.subscription = subscription
            return subscription.map { ticket }
        }
    }

    func unregister(_ ticket: Ticket) {
        eventLoop.execute {
            guard self.state.value.waiters[ticket.lockKey]?.removeValue(forKey: ticket.id) != nil else { return }
            if self.state.value.waiters[ticket.lockKey]?.isEmpty == true {
                self.state.value.waiters.removeValue(forKey: ticket.lockKey)
            }
            self.state.value.count -= 1
            assert(self.state.value.count >= 0)
            if self.state.value.count == 0 {
                self.state.value.subscription = nil
                _ = self.subscriber!.unsubscribe(self.channels)
            }
        }
    }

    func keyReleased(_ key: String) {
        eventLoop.assertInEventLoop()
        guard let waiters = state.value.waiters[key] else { return }
        for waiter in waiters.values { waiter.loop.execute(waiter.wake) }
    }

    func wakeAll() {
        eventLoop.execute {
            for waiters in self.state.value.waiters.values {
                for waiter in waiters.values { waiter.loop.execute(waiter.wake) }
            }
        }
    }
}
