import NIOCore

/// A terminal server to load, `host:port`.
public struct Target: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (1...65_535).contains(port), colon > text.startIndex else { return nil }
        self.host = String(text[..<colon])
        self.port = port
    }

    public var description: String { "\(host):\(port)" }
}

public struct LoadOptions: Sendable {
    /// Connections are spread over the targets round-robin.
    public var targets: [Target]
    /// Requests per second over all connections, on a fixed timetable; 0 = closed loop.
    public var rate = 10_000
    public var duration: TimeAmount = .seconds(10)
    public var connections = 64
    /// Most requests in flight per connection; the closed loop keeps this many.
    public var pipeline = 1
    /// Accounts `bench-0` … `bench-(accounts-1)`, chosen uniformly.
    public var accounts = 10_000
    /// Share of requests aimed at `hot-0` … `hot-(hotAccounts-1)`.
    public var contended = 0.01
    public var hotAccounts = 10
    public var threads = 1
    /// After the last send, how long to wait for the remaining answers.
    public var drainTimeout: TimeAmount = .seconds(10)
    /// Prefix of every request id, unique per run (ids are remembered 24 h).
    public var runID: String

    public init(targets: [Target], runID: String) {
        self.targets = targets
        self.runID = runID
    }

    public var closedLoop: Bool { rate == 0 }
}
