import AuthorizerCore
import AuthorizerServer
import Foundation
import Ledger
import NIOCore
import RedisWire

/// A real Redis Cluster: `masters` masters with one replica each, every node
/// a redis-server from the project's redis.conf plus the cluster options, on
/// free ports (cluster bus = port + 10000), with the project's ACL users
/// shared by all nodes; replicas log in to their master as `replication`.
/// Built with `redis-cli --cluster create` as an operator would. Every node
/// is killed with its process group when the cluster is released.
final class RedisCluster: @unchecked Sendable {
    let users: URL
    private(set) var nodes: [RedisServer] = []
    let credentials: [String: String]

    /// The `authorizer` user's URLs of every node, comma-separated: what
    /// `--redis` takes as seeds.
    var seeds: String { nodes.map(\.url).joined(separator: ",") }

    private let name: String
    private let nodeTimeoutMs: Int

    /// `nodeTimeoutMs` is long by default: a master stalled for a couple of
    /// seconds (an AOF fsync on a slow disk, a starved core) would otherwise
    /// be failed over in the middle of a suite that does not test failovers,
    /// and writes its replica had not received would vanish under the test.
    /// Suites that test failovers pass a short one.
    init(name: String, masters: Int = 3, nodeTimeoutMs: Int = 15_000) throws {
        precondition(masters >= 3, "redis-cli --cluster create wants at least 3 masters")
        self.name = name
        self.nodeTimeoutMs = nodeTimeoutMs
        users = try TestEnvironment.makeTemporaryDirectory("cluster-\(name)-users")
        credentials = try RedisServer.generateUsers(in: users, port: 0)
        for index in 0..<(masters * 2) {
            nodes.append(try makeNode(index))
        }
        let create = ChildProcess(
            name: "cluster-create", executable: "/usr/bin/redis-cli",
            arguments: ["--user", "default", "--pass", credentials["REDIS_ADMIN_PASSWORD"] ?? "", "--no-auth-warning",
                        "--cluster", "create"] + nodes.map { "127.0.0.1:\($0.port)" } + ["--cluster-replicas", "1", "--cluster-yes"]
        )
        try create.start()
        guard create.waitForExit(timeout: 60) == 0 else { throw TestFailure("cluster create failed:\n\(create.output)") }
        try waitUntilHealthy()
    }

    private func makeNode(_ index: Int) throws -> RedisServer {
        try RedisServer(
            name: "\(name)-\(index)",
            users: users,
            portRule: { $0 + 10_000 <= 65_535 && RedisCluster.isFree($0 + 10_000) },
            extraArguments: [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes-{PORT}.conf",
                "--cluster-node-timeout", String(nodeTimeoutMs),
                // A master down stops only its own slots, not the whole cluster.
                "--cluster-require-full-coverage", "no",
                "--masteruser", "replication",
                "--masterauth", credentials["REPLICATION_PASSWORD"] ?? "",
            ]
        )
    }

    /// A new node joined as one more replica of `master` (`redis-cli --cluster
    /// add-node … --cluster-slave`, as an operator would), once it is in sync.
    func addReplica(of master: RedisServer) throws -> RedisServer {
        let node = try makeNode(nodes.count)
        nodes.append(node)
        let add = ChildProcess(
            name: "cluster-add-node", executable: "/usr/bin/redis-cli",
            arguments: ["--user", "default", "--pass", credentials["REDIS_ADMIN_PASSWORD"] ?? "", "--no-auth-warning",
                        "--cluster", "add-node", "127.0.0.1:\(node.port)", "127.0.0.1:\(master.port)",
                        "--cluster-slave", "--cluster-master-id", try nodeID(master)]
        )
        try add.start()
        guard add.waitForExit(timeout: 60) == 0 else { throw TestFailure("add-node failed:\n\(add.output)") }
        try waitUntilHealthy()
        let id = try nodeID(node)
        try master.waitUntil(timeout: 30) {
            ((try? master.command("INFO", "replication").string) ?? "").components(separatedBy: "state=online").count == 3
                && nodes.allSatisfy { RedisCluster.strings(in: try? $0.command("CLUSTER", "SLOTS")).contains(id) }
        }
        return node
    }

    /// Every string of a reply, however nested.
    static func strings(in reply: RESPValue?) -> [String] {
        guard let reply else { return [] }
        if let items = reply.array { return items.flatMap { strings(in: $0) } }
        return reply.string.map { [$0] } ?? []
    }

    /// Every node sees `cluster_state:ok` and every replica's link to its master is up
    /// (a replica that never synced is never promoted).
    func waitUntilHealthy(timeout: TimeInterval = 30) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            var healthy = true
            for node in nodes where node.isRunning {
                let info = (try? node.command("CLUSTER", "INFO").string) ?? ""
                let replication = (try? node.command("INFO", "replication").string) ?? ""
                if !info.contains("cluster_state:ok") { healthy = false }
                if replication.contains("role:slave") && !replication.contains("master_link_status:up") { healthy = false }
            }
            if healthy { return }
            guard Date() < deadline else { throw TestFailure("cluster not healthy after \(timeout) s") }
            Thread.sleep(forTimeInterval: 0.05)  // polling: a cluster announces no "ready" event
        }
    }

    /// The nodes that are masters now.
    func masters() throws -> [RedisServer] {
        try nodes.filter { $0.isRunning }.filter { try ($0.command("ROLE").array?.first?.string) == "master" }
    }

    /// The master serving `slot` now, from CLUSTER SHARDS... as seen by any live node.
    func master(ofSlot slot: Int) throws -> RedisServer? {
        for node in try masters() {
            let ranges = try ownedSlots(node)
            if ranges.contains(where: { $0.contains(slot) }) { return node }
        }
        return nil
    }

    /// The slot ranges a master owns, from its own CLUSTER MYID and CLUSTER SLOTS.
    func ownedSlots(_ node: RedisServer) throws -> [ClosedRange<Int>] {
        let slots = try node.command("CLUSTER", "SLOTS").array ?? []
        var ranges: [ClosedRange<Int>] = []
        for entry in slots {
            guard let items = entry.array, items.count >= 3, let low = items[0].int, let high = items[1].int,
                  let owner = items[2].array, owner.count >= 2, let port = owner[1].int else { continue }
            if Int(port) == node.port { ranges.append(Int(low)...Int(high)) }
        }
        return ranges
    }

    /// The node id a node reports for itself.
    func nodeID(_ node: RedisServer) throws -> String {
        guard let id = try node.command("CLUSTER", "MYID").string else { throw TestFailure("CLUSTER MYID") }
        return id
    }

    /// Moves `slot` to `target` the way `redis-cli --cluster reshard` does:
    /// IMPORTING on the target, MIGRATING on the source, MIGRATE … KEYS in
    /// batches, then SETSLOT … NODE on the target, the source and every other
    /// master. `between` runs after the keys moved and before the slot is
    /// handed over (the migration window a test wants to observe).
    func migrate(slot: Int, to target: RedisServer, batch: Int = 100, between: () throws -> Void = {}) throws {
        guard let source = try master(ofSlot: slot) else { throw TestFailure("no master for slot \(slot)") }
        guard source !== target else { return }
        let targetID = try nodeID(target)
        let sourceID = try nodeID(source)
        try target.command("CLUSTER", "SETSLOT", String(slot), "IMPORTING", sourceID)
        try source.command("CLUSTER", "SETSLOT", String(slot), "MIGRATING", targetID)
        let password = credentials["REDIS_ADMIN_PASSWORD"] ?? ""
        while true {
            let keys = try source.command("CLUSTER", "GETKEYSINSLOT", String(slot), String(batch)).array?.compactMap(\.string) ?? []
            if keys.isEmpty { break }
            try source.command(["MIGRATE", "127.0.0.1", String(target.port), "", "0", "5000", "AUTH2", "default", password, "KEYS"] + keys)
        }
        try between()
        try target.command("CLUSTER", "SETSLOT", String(slot), "NODE", targetID)
        try source.command("CLUSTER", "SETSLOT", String(slot), "NODE", targetID)
        for other in try masters() where other !== source && other !== target {
            try other.command("CLUSTER", "SETSLOT", String(slot), "NODE", targetID)
        }
    }

    /// The ledger stream of an account on a cluster (`statements:{T}`, T the
    /// smallest integer whose slot is the account's), as docs/cluster.md states it.
    /// The slot streams `statements:{T}` a master holds (SCAN is node-local).
    func streams(on master: RedisServer) throws -> [String] {
        var streams: [String] = []
        var cursor = "0"
        repeat {
            let reply = try master.command("SCAN", cursor, "MATCH", "statements:*", "COUNT", "1000", "TYPE", "stream")
            guard let parts = reply.array, parts.count == 2, let next = parts[0].string else { throw TestFailure("SCAN: \(reply)") }
            streams += (parts[1].array ?? []).compactMap(\.string)
            cursor = next
        } while cursor != "0"
        return streams
    }

    static func streamKey(_ account: String) -> String {
        LedgerLayout.streamPerSlot.stream(forAccount: account)
    }

    /// Sets balances through Lua/adjust.lua (what `authorizer account set`
    /// runs), routed by slot and pipelined: a `set` statement in each slot stream.
    func setBalances(_ accounts: [String: [String: Int64]], on loop: EventLoop) throws {
        let scripts = try ScriptLibrary.load(directory: TestEnvironment.repositoryRoot.appendingPathComponent("Lua").path)
        let router = Redis(target: .cluster(seeds: [try RedisEndpoint(url: nodes[0].url)]), eventLoop: loop, scripts: [scripts.adjust])
        try router.connect().wait()
        defer { router.close() }
        let replies = try loop.submit {
            accounts.map { id, balances in
                router.run(.adjust(
                    kind: "set", operation: "set-\(id)-\(UUID().uuidString)", account: id,
                    changes: balances.sorted { $0.key < $1.key }.map { (category: $0.key, cents: Cents($0.value)) },
                    statements: Self.streamKey(id)
                ), in: scripts)
            }
        }.wait()
        for reply in replies { _ = try reply.wait() }
    }

    static func isFree(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }
}
