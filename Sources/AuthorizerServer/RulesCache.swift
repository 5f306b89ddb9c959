import AuthorizerCore
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// An in-memory copy of the rules (cache-aside). Reloaded when the CLI
/// announces a change and every second, so a rule changed with plain
/// redis-cli is in use within about a second.
public final class RulesCache: Sendable {
    private let current: NIOLockedValueBox<Rules>
    private let store: RulesStore
    private let logger: Logger
    private let refreshTask: NIOLockedValueBox<RepeatedTask?> = .init(nil)

    public init(initial: Rules, store: RulesStore, logger: Logger) {
        self.current = NIOLockedValueBox(initial)
        self.store = store
        self.logger = logger
    }

    public var rules: Rules { current.withLockedValue { $0 } }

    @discardableResult
    public func refresh() -> EventLoopFuture<Void> {
        store.load().map { rules in
            let errors = rules.validationErrors()
            guard errors.isEmpty else {
                self.logger.error("rules in redis are invalid; keeping the previous ones", metadata: ["errors": "\(errors)"])
                return
            }
            let changed = self.current.withLockedValue { current -> Bool in
                defer { current = rules }
                return current != rules
            }
            if changed {
                self.logger.info("rules reloaded", metadata: [
                    "mcc": "\(rules.mccCategories.count)", "merchants": "\(rules.merchantMCCs.count)", "controls": "\(rules.programControls.argument)",
                ])
            }
        }.recover { error in
            self.logger.warning("rules refresh failed", metadata: ["error": "\(error)"])
        }
    }

    public func startPeriodicRefresh(every interval: TimeAmount = .seconds(1)) {
        let task = store.redis.eventLoop.scheduleRepeatedAsyncTask(initialDelay: interval, delay: interval) { _ in
            self.refresh()
        }
        refreshTask.withLockedValue { $0 = task }
    }

    public func stop() {
        refreshTask.withLockedValue { $0?.cancel(); $0 = nil }
    }
}
