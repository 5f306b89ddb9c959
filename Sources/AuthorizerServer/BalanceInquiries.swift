import AuthorizerCore
import Logging
import NIOCore
import RedisWire

extension AccountGate {
    /// A balance inquiry: read-only, no lock, no queue; answered `07 timeout`
    /// when Redis does not answer within the SLA.
    func balance(_ inquiry: BalanceInquiry, receivedAt: NIODeadline) -> EventLoopFuture<Decision> {
        let promise = eventLoop.makePromise(of: Decision.self)
        eventLoop.execute {
            let answered = NIOLoopBoundBox(false, eventLoop: self.eventLoop)
            let timer = self.eventLoop.assumeIsolated().scheduleTask(deadline: receivedAt + self.config.sla - self.config.answerMargin) {
                guard !answered.value else { return }
                answered.value = true
                self.metrics.timedOut()
                self.logger.warning("declined", metadata: ["account": "\(inquiry.account)", "id": "\(inquiry.id)", "reason": "\(RejectReason.timeout)"])
                promise.succeed(.rejected(.timeout))
            }
            let sent = NIODeadline.now()
            self.redis.run(.balance(account: inquiry.account), in: self.scripts).assumeIsolated().whenComplete { result in
                self.metrics.redisRoundTrip(.balance, since: sent)
                guard !answered.value else { return }
                answered.value = true
                timer.cancel()
                promise.succeed(Self.balanceDecision(result, logger: self.logger))
            }
        }
        return promise.futureResult
    }

    static func balanceDecision(_ result: Result<RESPValue, Error>, logger: Logger) -> Decision {
        switch result {
        case .failure(let error):
            logger.warning("balance inquiry failed", metadata: ["error": "\(error)"])
            return .rejected(.storageUnavailable)
        case .success(let value):
            guard let items = value.array, let kind = items.first?.string else { return .rejected(.internalError(nil)) }
            if kind == "UNKNOWN" { return .rejected(.unknownAccount) }
            guard kind == "BALANCES", items.count % 2 == 1 else { return .rejected(.internalError(nil)) }
            var balances: [CategoryBalance] = []
            var index = 1
            while index + 1 < items.count {
                guard let category = items[index].string, let text = items[index + 1].string else { return .rejected(.internalError(nil)) }
                guard let cents = Int64(text) else { return .rejected(.declined("balance is not an integer amount of cents")) }
                balances.append(CategoryBalance(category: category, balance: Cents(cents)))
                index += 2
            }
            return Decision(code: .approved, balances: balances.sorted { $0.category < $1.category })
        }
    }
}
