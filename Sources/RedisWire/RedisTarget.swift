import NIOCore

/// One Redis, or a Redis Cluster found from seed nodes (`--redis` with one
/// or several comma-separated URLs; a cluster is recognised by its
/// `cluster_enabled:1`, not by a flag).
public enum RedisTarget: Sendable {
    case single(RedisEndpoint)
    case cluster(seeds: [RedisEndpoint])

    public var isCluster: Bool {
        if case .cluster = self { return true }
        return false
    }

    /// The first endpoint: the node tools talk to for anything not routed by key.
    public var primary: RedisEndpoint {
        switch self {
        case .single(let endpoint): return endpoint
        case .cluster(let seeds): return seeds[0]
        }
    }

    /// Whether the node behind `client` runs in cluster mode (INFO cluster).
    /// A user without INFO (the read-only operator): CLUSTER SLOTS answers
    /// on a cluster and refuses on a single Redis.
    public static func isCluster(_ client: RedisClient) -> EventLoopFuture<Bool> {
        client.send(RedisCommand("INFO", "cluster")).map { reply in
            (reply.string ?? "").contains("cluster_enabled:1")
        }.flatMapError { error in
            guard (error as? RedisError)?.kind == .noPermission else {
                return client.eventLoop.makeFailedFuture(error)
            }
            return client.send(RedisCommand("CLUSTER", "SLOTS")).map { !($0.array ?? []).isEmpty }.recover { _ in false }
        }
    }
}
