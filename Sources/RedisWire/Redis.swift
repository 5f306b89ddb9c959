import Logging
import NIOCore

/// Redis for one event loop, one Redis or a cluster alike: the slot map,
/// one pipelined `RedisClient` per master (opened lazily, scripts loaded on
/// each), and the redirection loop. One Redis is a map in which its one node
/// serves every slot (no `CLUSTER SLOTS` asked, nothing redirected): callers
/// route every command by key or node and never ask which it is.
///
/// - `MOVED`: the slot map is updated, the command resent to the new owner,
///   and the whole map re-read in the background.
/// - `ASK`: `ASKING` and the command are sent back to back to the importing
///   node, once.
/// - `TRYAGAIN` (a multi-key script while its slot migrates): resent after a
///   short back-off, the map re-read, within `tryAgainBudget`.
/// - `CLUSTERDOWN`, or a node that cannot be reached: fails at once (the
///   caller answers 07); the map is re-read so a promoted replica is found.
///
/// A command is resent only after a reply that says it did not run
/// (MOVED, ASK, TRYAGAIN). A link lost after the send is an unknown outcome
/// and is never resent.
public final class Redis: Sendable {
    public typealias Node = ClusterTopology.Node

    public let eventLoop: EventLoop
    /// What was found at start: one Redis or a cluster (the rules' and the
    /// ledger's key layouts depend on it; routing does not).
    public let target: RedisTarget
    /// User, password and database for every node; host and port come from the map.
    private let credentials: RedisEndpoint
    private let seeds: [Node]
    private let scripts: [LuaScript]
    private let options: RedisConnection.Options
    private let logger: Logger
    private let onReconnect: (@Sendable () -> Void)?
    private let onScriptsReloaded: (@Sendable () -> Void)?
    private let onRedirect: (@Sendable (RedirectKind) -> Void)?
    private let state: NIOLoopBoundBox<State>

    public enum RedirectKind: String, Sendable { case moved, ask, tryAgain = "tryagain" }

    /// Redirections followed for one command before giving up.
    public static let maxRedirects = 8
    /// How long one command keeps retrying TRYAGAIN (a slot's migration).
    public let tryAgainBudget: TimeAmount
    /// The map is re-read at least this often even when nothing says it is stale.
    public static let refreshInterval = TimeAmount.seconds(5)

    private struct State {
        var topology = ClusterTopology()
        var clients: [Node: RedisClient] = [:]
        var refreshing: EventLoopFuture<Void>?
        var lastRefresh: NIODeadline = .uptimeNanoseconds(0)
        var closed = false
    }

    /// One Redis or a cluster, as `target` says.
    public init(
        target: RedisTarget,
        eventLoop: EventLoop,
        scripts: [LuaScript] = [],
        options: RedisConnection.Options = .init(),
        tryAgainBudget: TimeAmount = .seconds(2),
        logger: Logger = Logger(label: "redis"),
        onReconnect: (@Sendable () -> Void)? = nil,
        onScriptsReloaded: (@Sendable () -> Void)? = nil,
        onRedirect: (@Sendable (RedirectKind) -> Void)? = nil
    ) {
        let seeds: [RedisEndpoint]
        switch target {
        case .single(let endpoint): seeds = [endpoint]
        case .cluster(let clusterSeeds): seeds = clusterSeeds
        }
        precondition(!seeds.isEmpty, "a cluster needs at least one seed node")
        self.target = target
        self.credentials = seeds[0]
        self.seeds = seeds.map { Node(host: $0.host, port: $0.port) }
        self.eventLoop = eventLoop
        self.scripts = scripts
        self.options = options
        self.tryAgainBudget = tryAgainBudget
        self.logger = logger
        self.onReconnect = onReconnect
        self.onScriptsReloaded = onScriptsReloaded
        self.onRedirect = onRedirect
        var state = State()
        if !target.isCluster { state.topology = ClusterTopology(single: self.seeds[0]) }
        self.state = NIOLoopBoundBox.makeBoxSendingValue(state, eventLoop: eventLoop)
    }

    private var isSingle: Bool { !target.isCluster }

    /// Reads the slot map and connects to every master (loading the scripts there).
    public func connect() -> EventLoopFuture<Void> {
        eventLoop.flatSubmit {
            self.refresh().flatMap {
                let masters = self.state.value.topology.masters
                return EventLoopFuture.andAllSucceed(masters.map { self.client(for: $0).connect() }, on: self.eventLoop)
            }
        }
    }

    /// The slot map as this loop knows it now.
    public var topology: EventLoopFuture<ClusterTopology> {
        eventLoop.submit { self.state.value.topology }
    }

    /// The client of `node` on this loop (created lazily).
    public func client(for node: Node) -> RedisClient {
        eventLoop.assertInEventLoop()
        if let client = state.value.clients[node] { return client }
        let client = RedisClient(
            endpoint: credentials.at(node), eventLoop: eventLoop, scripts: scripts, options: options, logger: logger,
            onReconnect: onReconnect, onScriptsReloaded: onScriptsReloaded
        )
        state.value.clients[node] = client
        return client
    }

    /// The master serving `slot` now, if the map has one.
    public func master(ofSlot slot: Int) -> Node? {
        eventLoop.assertInEventLoop()
        return state.value.topology.master(ofSlot: slot)
    }

    /// EVALSHA on the master of the slot of `keys[0]` (every key of one call
    /// must share that slot: the scripts touch one account's keys only).
    public func evalScript(_ script: LuaScript, keys: [String], arguments: [String]) -> EventLoopFuture<RESPValue> {
        eventLoop.assertInEventLoop()
        precondition(!keys.isEmpty, "a routed script names its keys")
        let slot = slot(ofKeys: keys)
        return route(slot: slot, started: .now()) { client in
            client.evalScript(script, keys: keys, arguments: arguments)
        }
    }

    /// EVALSHA as above, then WAIT on the connection of the node that ran it,
    /// for every replica the map lists for that node (at least `replicas`).
    ///
    /// Every listed replica, not any `replicas` of them: a write held by one
    /// replica only is lost when another is promoted. That happens when a
    /// master comes back (resumed, partition healed) while one of its
    /// replicas is still winning the failover it started: the old master
    /// takes writes until it hears of the promotion, and the replica that
    /// was not promoted acknowledges them. The promoted replica has stopped
    /// acknowledging, so a WAIT for every replica falls short instead.
    /// A replica the cluster marks failed leaves the list at the next read
    /// of the map (a shortfall asks for one).
    public func evalScript(
        _ script: LuaScript, keys: [String], arguments: [String], replicas: Int, waitMs: @escaping @Sendable (RESPValue) -> Int?
    ) -> EventLoopFuture<ReplicatedReply> {
        eventLoop.assertInEventLoop()
        precondition(!keys.isEmpty, "a routed script names its keys")
        let slot = slot(ofKeys: keys)
        return route(slot: slot, started: .now()) { client in
            let node = Node(host: client.endpoint.host, port: client.endpoint.port)
            let wanted = self.replicasWanted(atLeast: replicas, of: node)
            return client.evalScript(script, keys: keys, arguments: arguments, replicas: wanted, waitMs: waitMs).map { replied in
                if replied.isShort { self.refreshAfterShortfall() }
                return replied
            }
        }
    }

    /// The slot of a script's keys: on a cluster they share one (the scripts
    /// touch one account's keys); one Redis holds every slot.
    private func slot(ofKeys keys: [String]) -> Int {
        if isSingle { return 0 }
        let slot = HashSlot.of(key: keys[0])
        assert(keys.allSatisfy { HashSlot.of(key: $0) == slot }, "one script, one slot")
        return slot
    }

    /// Replicas a WAIT on `node` asks for: every one the map lists, at least `count`.
    public func replicasWanted(atLeast count: Int, of node: Node) -> Int {
        eventLoop.assertInEventLoop()
        return min(max(count, state.value.topology.replicas(of: node).count), Self.maxReplicasWanted)
    }

    /// Whether the cluster runs with replicas (what the default of
    /// `--replica-acks` rests on): the map lists one, or a master has one
    /// connected (`INFO replication`). Both, because `CLUSTER SLOTS` leaves
    /// out a replica that has replicated nothing yet (offset 0: a cluster
    /// nobody wrote to) and a promoted replica has none until its old master
    /// rejoins; a master that cannot be asked counts as none.
    public func isReplicated() -> EventLoopFuture<Bool> {
        // One Redis: acks only when asked for (a replica of it is not a failover plan).
        if isSingle { return eventLoop.makeSucceededFuture(false) }
        return eventLoop.flatSubmit {
            let topology = self.state.value.topology
            if topology.hasReplicas { return self.eventLoop.makeSucceededFuture(true) }
            let asked = topology.masters.map { node in
                self.client(for: node).send(RedisCommand("INFO", "replication")).map { reply -> Bool in
                    let text = reply.string ?? ""
                    return text.split(whereSeparator: \.isNewline).contains { line in
                        line.hasPrefix("connected_slaves:") && (Int(line.dropFirst("connected_slaves:".count)) ?? 0) > 0
                    }
                }.recover { _ in false }
            }
            return EventLoopFuture.whenAllSucceed(asked, on: self.eventLoop).map { $0.contains(true) }
        }
    }

    /// The replicas a WAIT asks for at most (a bound on what a map can say).
    public static let maxReplicasWanted = 16
    /// Shortfalls re-read the map at most this often.
    public static let shortfallRefreshInterval = TimeAmount.milliseconds(250)

    /// A replica that died stays listed until the cluster marks it failed
    /// and the map is read again: a shortfall asks for that read, at most
    /// once per `shortfallRefreshInterval`.
    private func refreshAfterShortfall() {
        guard NIODeadline.now() - state.value.lastRefresh > Self.shortfallRefreshInterval else { return }
        refreshSoon()
    }

    /// Any command, on the master of `slot`.
    public func send(_ command: RedisCommand, slot: Int) -> EventLoopFuture<RESPValue> {
        eventLoop.flatSubmit {
            self.route(slot: slot, started: .now()) { $0.send(command) }
        }
    }

    /// `body` on the master of `slot` (or on `asking`, after ASKING), with
    /// the redirect loop of `RedirectMachine` around it.
    private func route<Reply: Sendable>(
        slot: Int, started: NIODeadline, _ body: @escaping @Sendable (RedisClient) -> EventLoopFuture<Reply>
    ) -> EventLoopFuture<Reply> {
        let machine = RedirectMachine(maxRedirects: Self.maxRedirects, started: started, tryAgainBudget: tryAgainBudget)
        return send(slot: slot, asking: nil, machine: machine, body)
    }

    private func send<Reply: Sendable>(
        slot: Int, asking: Node?, machine: RedirectMachine, _ body: @escaping @Sendable (RedisClient) -> EventLoopFuture<Reply>
    ) -> EventLoopFuture<Reply> {
        refreshIfDue()
        guard let node = asking ?? state.value.topology.master(ofSlot: slot) else {
            refreshSoon()
            return eventLoop.makeFailedFuture(RedisError.unavailable("no master serves slot \(slot)"))
        }
        let client = client(for: node)
        if asking != nil {
            // Back to back on one connection: ASKING applies to the next command only.
            _ = client.send(RedisCommand("ASKING"))
        }
        return body(client).flatMapError { error in
            guard let redisError = error as? RedisError else { return self.eventLoop.makeFailedFuture(error) }
            var machine = machine
            let (action, effects) = machine.failed(redisError.kind, now: .now())
            self.perform(effects)
            switch action {
            case .sendToMaster:
                return self.send(slot: slot, asking: nil, machine: machine, body)
            case .sendAsking(let target):
                return self.send(slot: slot, asking: target, machine: machine, body)
            case .refreshThenRetry(let delay):
                return self.eventLoop.flatScheduleTask(in: delay) {
                    self.refresh().flatMap { self.send(slot: slot, asking: nil, machine: machine, body) }
                }.futureResult
            case .fail:
                return self.eventLoop.makeFailedFuture(error)
            }
        }
    }

    private func perform(_ effects: RedirectMachine.Effects) {
        if let redirect = effects.redirect { onRedirect?(redirect) }
        if let moved = effects.moved { state.value.topology.moved(slot: moved.slot, to: moved.node) }
        if effects.refreshSoon { refreshSoon() }
    }

    // MARK: - The slot map

    private func refreshIfDue() {
        if NIODeadline.now() - state.value.lastRefresh > Self.refreshInterval { refreshSoon() }
    }

    private func refreshSoon() {
        _ = refresh()
    }

    /// Re-reads CLUSTER SLOTS from the first node that answers: the known
    /// masters, then their replicas, then the seeds. One read at a time.
    @discardableResult
    public func refresh() -> EventLoopFuture<Void> {
        eventLoop.assertInEventLoop()
        // One Redis: its map never changes.
        if isSingle { return eventLoop.makeSucceededVoidFuture() }
        if let refreshing = state.value.refreshing { return refreshing }
        let topology = state.value.topology
        var candidates = topology.masters + topology.replicas.flatMap { $0 } + seeds
        var seen = Set<Node>()
        candidates = candidates.filter { seen.insert($0).inserted }
        let future = ask(candidates[...]).map { topology in
            if topology != self.state.value.topology {
                self.logger.info("cluster slot map updated", metadata: ["masters": "\(topology.masters.map(\.description))"])
            }
            self.state.value.topology = topology
            self.state.value.lastRefresh = .now()
        }
        state.value.refreshing = future
        future.whenComplete { _ in self.state.value.refreshing = nil }
        return future
    }

    private func ask(_ candidates: ArraySlice<Node>) -> EventLoopFuture<ClusterTopology> {
        guard let node = candidates.first else {
            return eventLoop.makeFailedFuture(RedisError.unavailable("no cluster node answered CLUSTER SLOTS"))
        }
        return client(for: node).send(RedisCommand("CLUSTER", "SLOTS")).flatMapThrowing { reply in
            let topology = try ClusterTopology(clusterSlots: reply)
            guard !topology.masters.isEmpty else { throw RedisError.unexpectedReply("empty CLUSTER SLOTS from \(node)") }
            return topology
        }.flatMapError { error in
            self.logger.debug("CLUSTER SLOTS failed", metadata: ["node": "\(node)", "error": "\(error)"])
            return self.ask(candidates.dropFirst())
        }
    }

    /// Lets each master answer what was sent, then closes every link.
    public func shutdown() -> EventLoopFuture<Void> {
        eventLoop.flatSubmit {
            self.state.value.closed = true
            let clients = Array(self.state.value.clients.values)
            return EventLoopFuture.andAllComplete(clients.map { $0.shutdown() }, on: self.eventLoop)
        }
    }

    public func close() {
        eventLoop.execute {
            self.state.value.closed = true
            for client in self.state.value.clients.values { client.close() }
        }
    }
}
