/// Which master serves each of the 16,384 slots, from `CLUSTER SLOTS`.
public struct ClusterTopology: Sendable, Equatable {
    public struct Node: Sendable, Hashable, CustomStringConvertible {
        public let host: String
        public let port: Int
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
        public var description: String { "\(host):\(port)" }
    }

    public static let slotCount = HashSlot.count

    /// Index into `masters` per slot; -1 where no master serves the slot.
    private var owner: [Int16]
    public private(set) var masters: [Node]
    /// Replicas of each master, same order as `masters`.
    public private(set) var replicas: [[Node]]

    /// The cluster is replicated: some master has a replica listed (the
    /// default of `--replica-acks` rests on it). Not "every master": right
    /// after a failover a promoted replica has none until its old master
    /// rejoins, and a process started then must not turn the acks off for
    /// its whole life (that master's approvals wait for its replica instead).
    public var hasReplicas: Bool {
        replicas.contains { !$0.isEmpty }
    }

    public init() {
        owner = Array(repeating: -1, count: Self.slotCount)
        masters = []
        replicas = []
    }

    /// One Redis: `node` serves every slot and lists no replica.
    public init(single node: Node) {
        owner = Array(repeating: 0, count: Self.slotCount)
        masters = [node]
        replicas = [[]]
    }

    /// Parses a `CLUSTER SLOTS` reply: [[start, end, [host, port, id…], [replica…]…]…].
    public init(clusterSlots reply: RESPValue) throws {
        self.init()
        guard let ranges = reply.array else { throw RedisError.unexpectedReply("CLUSTER SLOTS: \(reply)") }
        for range in ranges {
            guard let items = range.array, items.count >= 3,
                  let start = items[0].int, let end = items[1].int,
                  (0..<Int64(Self.slotCount)).contains(start), (start...Int64(Self.slotCount - 1)).contains(end),
                  let master = Self.node(items[2]) else {
                throw RedisError.unexpectedReply("CLUSTER SLOTS entry: \(range)")
            }
            let index = indexOf(master)
            for replica in items.dropFirst(3).compactMap(Self.node) where !replicas[index].contains(replica) {
                replicas[index].append(replica)
            }
            for slot in Int(start)...Int(end) { owner[slot] = Int16(index) }
        }
    }

    private static func node(_ value: RESPValue) -> Node? {
        guard let items = value.array, items.count >= 2, let host = items[0].string, let port = items[1].int,
              (1...65_535).contains(port) else { return nil }
        return Node(host: host.isEmpty ? "127.0.0.1" : host, port: Int(port))
    }

    private mutating func indexOf(_ node: Node) -> Int {
        if let index = masters.firstIndex(of: node) { return index }
        masters.append(node)
        replicas.append([])
        return masters.count - 1
    }

    /// The master serving `slot`, if any.
    public func master(ofSlot slot: Int) -> Node? {
        precondition((0..<Self.slotCount).contains(slot))
        let index = owner[slot]
        return index < 0 ? nil : masters[Int(index)]
    }

    /// The replicas the cluster lists for `master` (CLUSTER SLOTS leaves out
    /// the ones it marks failed); none for a node learnt from a MOVED alone.
    public func replicas(of master: Node) -> [Node] {
        guard let index = masters.firstIndex(of: master) else { return [] }
        return replicas[index]
    }

    /// A MOVED reply: the slot belongs to `node` from now on.
    public mutating func moved(slot: Int, to node: Node) {
        precondition((0..<Self.slotCount).contains(slot))
        owner[slot] = Int16(indexOf(node))
    }

    /// Every slot has a master.
    public var coversEverySlot: Bool { !owner.contains(-1) }

    /// The slots `node` serves, as ranges.
    public func slots(of node: Node) -> [ClosedRange<Int>] {
        guard let index = masters.firstIndex(of: node).map(Int16.init) else { return [] }
        var ranges: [ClosedRange<Int>] = []
        var start: Int?
        for slot in 0...Self.slotCount {
            let mine = slot < Self.slotCount && owner[slot] == index
            if mine, start == nil { start = slot }
            if !mine, let first = start {
                ranges.append(first...(slot - 1))
                start = nil
            }
        }
        return ranges
    }
}

extension RedisEndpoint {
    /// The same credentials and database, on `node`.
    public func at(_ node: ClusterTopology.Node) -> RedisEndpoint {
        var endpoint = self
        endpoint.host = node.host
        endpoint.port = node.port
        return endpoint
    }
}
