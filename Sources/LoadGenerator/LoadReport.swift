import AuthorizerCore
import Histogram
import NIOCore

/// Latencies in nanoseconds, 3 significant digits, up to one hour.
public typealias LatencyHistogram = Histogram<UInt64>

public func makeLatencyHistogram() -> LatencyHistogram {
    LatencyHistogram(lowestDiscernibleValue: 1_000, highestTrackableValue: maxLatency, numberOfSignificantValueDigits: .three)
}

let maxLatency: UInt64 = 3_600_000_000_000

public struct LoadReport: Sendable {
    /// Requests written to a connection.
    public var sent = 0
    /// Answers received (each matched to its request by id, in order).
    public var answered = 0
    /// From the first scheduled send to the last answer.
    public var elapsed: TimeAmount = .zero
    public var latencies = makeLatencyHistogram()
    /// Answer code -> count.
    public var codes: [String: Int] = [:]
    /// 07 reason -> count.
    public var reasons: [String: Int] = [:]
    /// Problem -> number of requests it affected.
    public var errors: [String: Int] = [:]

    public init() {}

    public var errorCount: Int { errors.values.reduce(0, +) }
    public var throughput: Double {
        elapsed.nanoseconds > 0 ? Double(answered) * 1e9 / Double(elapsed.nanoseconds) : 0
    }

    mutating func merge(_ other: LoadReport) {
        sent += other.sent
        answered += other.answered
        elapsed = max(elapsed, other.elapsed)
        latencies.add(other.latencies)
        codes.merge(other.codes, uniquingKeysWith: +)
        reasons.merge(other.reasons, uniquingKeysWith: +)
        errors.merge(other.errors, uniquingKeysWith: +)
    }
}

public struct LoadProgress: Sendable {
    public var elapsed: TimeAmount
    public var sent: Int
    public var answered: Int
    public var errors: Int
    /// Latencies of the answers since the previous progress report.
    public var recent: LatencyHistogram
}

public enum LoadGeneratorError: Error, CustomStringConvertible {
    case cannotConnect(HostPort, Error)

    public var description: String {
        switch self {
        case .cannotConnect(let target, let error): return "cannot connect to \(target): \(error)"
        }
    }
}
