import AuthorizerCore
import NIOCore

/// What the generator speaks: line-JSON to the terminal port, or ISO 8583
/// (0200 purchases, 2-byte length prefix) to the ISO 8583 port.
public enum LoadProtocol: String, Sendable, CaseIterable {
    case line
    case iso8583

    /// The account of bench account number `n` (hot or not). ISO 8583 needs
    /// a PAN (digits): 8000000000 + n, hot ones 9000000000 + n.
    public func account(_ n: UInt64, hot: Bool) -> String {
        switch self {
        case .line: return hot ? "hot-\(n)" : "bench-\(n)"
        case .iso8583: return String((hot ? 9_000_000_000 : 8_000_000_000) + n)
        }
    }
}

public struct LoadOptions: Sendable {
    /// Connections are spread over the targets round-robin.
    public var targets: [HostPort]
    /// Requests per second over all connections, on a fixed timetable; 0 = closed loop.
    public var rate = 10_000
    public var duration: TimeAmount = .seconds(10)
    public var connections = 64
    /// Most requests in flight per connection; the closed loop keeps this many.
    public var pipeline = 1
    /// Accounts `bench-F` … `bench-(F+accounts-1)` (F: firstAccount), chosen uniformly.
    public var accounts = 10_000
    /// Number of the first account: a phase can load accounts no earlier phase touched.
    public var firstAccount = 0
    /// Share of requests aimed at `hot-0` … `hot-(hotAccounts-1)`.
    public var contended = 0.01
    public var hotAccounts = 10
    public var threads = 1
    /// After the last send, how long to wait for the remaining answers.
    public var drainTimeout: TimeAmount = .seconds(10)
    /// Prefix of every request id, unique per run (ids are remembered 24 h).
    public var runID: String
    public var wire: LoadProtocol = .line

    public init(targets: [HostPort], runID: String) {
        self.targets = targets
        self.runID = runID
    }

    public var closedLoop: Bool { rate == 0 }
}
