import Foundation
import Logging

/// Replay progress: a status line rewritten in place on a terminal, an info
/// log line every few seconds otherwise.
final class ProgressReporter {
    private let toTerminal: Bool
    private let logger: Logger
    private let interval: TimeInterval
    private let lag: () async -> String
    private var firstBatch: Date?
    private var lastBatch = Date()
    private var firstBatchSize = 0
    private var lastSeenTotal = 0
    private var lastReport = Date()
    private var appliedAtLastReport = 0
    private var wroteStatusLine = false

    /// `lag` describes the group's backlog; it is asked only when a report is due.
    init(toTerminal: Bool, logger: Logger, lag: @escaping () async -> String) {
        self.toTerminal = toTerminal
        self.logger = logger
        self.interval = toTerminal ? 0.5 : 5
        self.lag = lag
    }

    /// Called after every batch and every empty read.
    func update(_ stats: ConsumerStats) async {
        let now = Date()
        if stats.outcome.total != lastSeenTotal {
            if firstBatch == nil {
                firstBatch = now
                firstBatchSize = stats.outcome.total
            }
            lastBatch = now
            lastSeenTotal = stats.outcome.total
        }
        let elapsed = now.timeIntervalSince(lastReport)
        guard elapsed >= interval else { return }
        let processed = stats.outcome.total
        let rate = Double(processed - appliedAtLastReport) / elapsed
        let idle = processed == appliedAtLastReport
        appliedAtLastReport = processed
        lastReport = now
        // A log line only when something happened; a terminal line always (it shows the lag).
        if idle && !toTerminal { return }
        let backlog = await lag()
        if toTerminal {
            let line = "replayed \(stats.outcome.applied) (duplicates \(stats.outcome.duplicates), rejected \(stats.outcome.skipped))  \(Int(rate)) entries/s  \(backlog)"
            FileHandle.standardError.write(Data("\r\u{1B}[K\(line)".utf8))
            wroteStatusLine = true
        } else {
            logger.info("replay progress", metadata: [
                "applied": "\(stats.outcome.applied)", "duplicates": "\(stats.outcome.duplicates)",
                "rejected": "\(stats.outcome.skipped)", "entries_per_second": "\(Int(rate))", "backlog": "\(backlog)",
            ])
        }
    }

    /// Ends the status line; returns the average rate while there was work
    /// (from the end of the first batch to the end of the last one).
    func finish(_ stats: ConsumerStats) -> Double {
        let seconds = lastBatch.timeIntervalSince(firstBatch ?? lastBatch)
        let rate = stats.batches > 1 && seconds > 0 ? Double(stats.outcome.total - firstBatchSize) / seconds : 0
        if wroteStatusLine { FileHandle.standardError.write(Data("\n".utf8)) }
        return rate
    }
}
