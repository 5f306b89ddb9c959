import NIOCore

/// An exponential back-off: `first` after the first failure, doubling with
/// each failure after it, never above `max`; a success starts it over.
///
/// Every retry loop of the service takes its delays from one of these
/// (reconnects, owed reversals, the replayer's Redis failures, TRYAGAIN), so
/// the policies are named in one place (the presets below) and a loop can
/// only wait a bounded time between attempts.
public struct Backoff: Sendable, Equatable {
    public let first: TimeAmount
    public let max: TimeAmount
    /// Consecutive failures since the last success.
    public private(set) var failures = 0

    public init(first: TimeAmount, max: TimeAmount) {
        precondition(first > .zero, "a back-off starts above zero")
        precondition(max >= first, "a back-off's cap is at least its first delay")
        self.first = first
        self.max = max
    }

    /// The delay after `failures` consecutive failures: `first`, doubled
    /// `failures - 1` times, capped at `max`.
    public func delay(afterFailures failures: Int) -> TimeAmount {
        precondition(failures >= 1)
        var delay = first
        var doublings = failures - 1
        while doublings > 0 && delay < max {
            delay = delay * 2
            doublings -= 1
        }
        return Swift.min(delay, max)
    }

    /// Counts a failure; the delay to wait before the next attempt.
    public mutating func failed() -> TimeAmount {
        failures += 1
        return delay(afterFailures: failures)
    }

    public mutating func succeeded() {
        failures = 0
    }

    /// A reconnect to a Redis node that refused: callers are refused at once meanwhile.
    public static let reconnect = Backoff(first: .milliseconds(50), max: .seconds(1))
    /// A reversal owed after a `07 timeout`, retried until Redis acknowledges it.
    public static let owedReversal = Backoff(first: .milliseconds(50), max: .seconds(1))
    /// The replayer's Redis commands (reads, acknowledgements, claims).
    public static let replayer = Backoff(first: .milliseconds(50), max: .seconds(2))
    /// The lock-wait subscription lost: waiters meanwhile retry on their own timers.
    public static let resubscribe = Backoff(first: .milliseconds(100), max: .milliseconds(100))
    /// A TRYAGAIN during a slot migration, inside the request's own budget.
    public static let tryAgain = Backoff(first: .milliseconds(2), max: .milliseconds(25))
}

extension TimeAmount {
    /// The same span as a `Duration` (for `Task.sleep`).
    public var duration: Duration { .nanoseconds(nanoseconds) }
}
