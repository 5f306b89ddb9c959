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
    /// One subscriber connection and its waiters. On one Redis there is one;
    /// on a cluster one per master, since keyevents are node-local.
    private struct Watch: Sendable {
        let registry: WaiterRegistry
        let subscriber: RedisSubscriber
    }

    private let eventLoop: EventLoop
    /// The first node's watch: it also carries the rules-changed channel
    /// (ordinary PUBLISH reaches every node of a cluster).
    private let primary: Watch
    private let primaryNode: String
    /// The node whose keyevents announce `lockKey`'s release; nil: the primary.
    private let nodeOf: @Sendable (String) -> RedisEndpoint?
    private let watches: NIOLoopBoundBox<[String: Watch]>
    private let makeWatch: @Sendable (RedisEndpoint, Bool) -> Watch

    public convenience init(endpoint: RedisEndpoint, eventLoop: EventLoop, logger: Logger, metrics: ServerMetrics = .disabled, onRulesChanged: @escaping @Sendable () -> Void) {
        self.init(endpoint: endpoint, eventLoop: eventLoop, logger: logger, metrics: metrics, nodeOf: { _ in nil }, onRulesChanged: onRulesChanged)
    }

    /// `nodeOf` runs on `eventLoop` and names the master serving a lock key
    /// (a cluster); nil sends every registration to `endpoint`.
    public init(
        endpoint: RedisEndpoint, eventLoop: EventLoop, logger: Logger, metrics: ServerMetrics = .disabled,
        nodeOf: @escaping @Sendable (String) -> RedisEndpoint?, onRulesChanged: @escaping @Sendable () -> Void
    ) {
        let makeWatch: @Sendable (RedisEndpoint, Bool) -> Watch = { endpoint, carriesRules in
            let channels = Keys.keyEventChannels(database: endpoint.database)
            let registry = WaiterRegistry(eventLoop: eventLoop, channels: channels)
            let subscriber = RedisSubscriber(
                endpoint: endpoint,
                eventLoop: eventLoop,
                logger: logger,
                onMessage: { channel, payload in
                    if channel == Keys.rulesChangedChannel {
                        if carriesRules { onRulesChanged() }
                    } else if channels.contains(channel) {
                        registry.keyReleased(payload)
                    }
                },
                onResubscribed: {
                    metrics.redisReconnected(.subscriber)
                    // Events published while the link was down are lost: let
                    // every waiter look at its lock again.
                    registry.wakeAll()
                    if carriesRules { onRulesChanged() }
                }
            )
            registry.subscriber = subscriber
            return Watch(registry: registry, subscriber: subscriber)
        }
        self.eventLoop = eventLoop
        self.makeWatch = makeWatch
        self.nodeOf = nodeOf
        self.primary = makeWatch(endpoint, true)
        self.primaryNode = "\(endpoint.host):\(endpoint.port)"
        self.watches = NIOLoopBoundBox.makeBoxSendingValue([:], eventLoop: eventLoop)
    }

    /// Subscribes to the rules-changed channel for the life of the process.
    public func start() -> EventLoopFuture<Void> {
        primary.subscriber.subscribe([Keys.rulesChangedChannel])
    }

    /// Registers `wake` to run on `loop` whenever `lockKey` is released. The
    /// future completes once the keyevent subscription is live, so an unlock
    /// that happens after it completes is never missed.
    ///
    /// `owner`: the master that just answered for the lock's slot (a
    /// cluster), which beats this watcher's own map right after a reshard.
    func register(lockKey: String, owner: ClusterTopology.Node? = nil, on loop: EventLoop, wake: @escaping @Sendable () -> Void) -> EventLoopFuture<WaiterRegistry.Ticket> {
        eventLoop.flatSubmit {
            let watch = self.watch(for: lockKey, owner: owner)
            return watch.registry.register(lockKey: lockKey, on: loop, wake: wake).map { ticket in
                WaiterRegistry.Ticket(lockKey: ticket.lockKey, id: ticket.id, registry: watch.registry)
            }
        }.hop(to: loop)
    }

    func unregister(_ ticket: WaiterRegistry.Ticket) {
        (ticket.registry ?? primary.registry).unregister(ticket)
    }

    /// The watch of the node serving `lockKey`, created on first use.
    private func watch(for lockKey: String, owner: ClusterTopology.Node?) -> Watch {
        eventLoop.assertInEventLoop()
        var endpoint = nodeOf(lockKey)
        if let owner, let known = endpoint { endpoint = known.at(owner) }
        guard let endpoint else { return primary }
        let name = "\(endpoint.host):\(endpoint.port)"
        if name == primaryNode { return primary }
        if let watch = watches.value[name] { return watch }
        let watch = makeWatch(endpoint, false)
        watches.value[name] = watch
        return watch
    }

    public func close() {
        primary.subscriber.close()
        eventLoop.execute {
            for watch in self.watches.value.values { watch.subscriber.close() }
        }
    }
}

/// The waiters, kept on the subscriber's event loop.
final class WaiterRegistry: @unchecked Sendable {
    struct Ticket: Sendable {
        let lockKey: String
        let id: UInt64
        /// The registry (node) it was registered with.
        var registry: WaiterRegistry? = nil
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
