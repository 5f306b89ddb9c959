import NIOCore

/// The redirect loop of one routed command, pure: each failed reply of the
/// node the command went to is an event, and the machine says what the
/// router does next. No map, no clients, no timers; `Redis` performs
/// the actions (the model: `JobStateMachine`).
///
///     send --MOVED--> map updated, re-read in the background, resend to the new owner
///          --ASK--> ASKING + the command to the importing node, once
///          --TRYAGAIN--> re-read the map after a back-off, resend (within the budget)
///          --CLUSTERDOWN, link lost--> re-read the map in the background, fail
///          --anything else--> fail
///
/// A command is resent only after a reply that says it did not run (MOVED,
/// ASK, TRYAGAIN); a link lost after the send is an unknown outcome and
/// fails. Every resend counts toward `maxRedirects`.
struct RedirectMachine {
    typealias Node = ClusterTopology.Node

    enum Action: Equatable {
        /// Send to the slot's master as the map says now.
        case sendToMaster
        /// `ASKING` and the command back to back to `node`.
        case sendAsking(Node)
        /// Re-read the map after `delay`, then send to the master.
        case refreshThenRetry(after: TimeAmount)
        /// The error stands: pass it to the caller.
        case fail
    }

    /// What the router does besides the next action.
    struct Effects: Equatable {
        /// The slot's new owner, to write into the map at once.
        var moved: (slot: Int, node: Node)?
        /// Re-read the map in the background.
        var refreshSoon = false
        /// A redirect to count (metrics).
        var redirect: Redis.RedirectKind?

        static func == (lhs: Effects, rhs: Effects) -> Bool {
            lhs.moved?.slot == rhs.moved?.slot && lhs.moved?.node == rhs.moved?.node
                && lhs.refreshSoon == rhs.refreshSoon && lhs.redirect == rhs.redirect
        }
    }

    let maxRedirects: Int
    /// The latest moment a TRYAGAIN retry may be due.
    let tryAgainDeadline: NIODeadline
    private(set) var redirects = 0

    init(maxRedirects: Int, started: NIODeadline, tryAgainBudget: TimeAmount) {
        precondition(maxRedirects > 0)
        self.maxRedirects = maxRedirects
        self.tryAgainDeadline = started + tryAgainBudget
    }

    /// The command failed with `kind` (nil: no reply, the link failed) at `now`.
    mutating func failed(_ kind: RedisErrorKind?, now: NIODeadline) -> (Action, Effects) {
        var effects = Effects()
        guard let kind else {
            // The node is unreachable or the link broke: maybe a failover.
            effects.refreshSoon = true
            return (.fail, effects)
        }
        guard redirects < maxRedirects else { return (.fail, effects) }
        switch kind {
        case .moved(let slot, let host, let port):
            effects.redirect = .moved
            effects.moved = (slot, Node(host: host, port: port))
            effects.refreshSoon = true
            redirects += 1
            return (.sendToMaster, effects)
        case .ask(_, let host, let port):
            effects.redirect = .ask
            redirects += 1
            return (.sendAsking(Node(host: host, port: port)), effects)
        case .tryAgain:
            effects.redirect = .tryAgain
            let delay = Backoff.tryAgain.delay(afterFailures: redirects + 1)
            guard now + delay < tryAgainDeadline else { return (.fail, effects) }
            return (.refreshThenRetry(after: delay), effects)
        case .clusterDown:
            effects.refreshSoon = true
            return (.fail, effects)
        case .noScript, .busyGroup, .noGroup, .noPermission, .crossSlot, .outOfMemory, .other:
            return (.fail, effects)
        }
    }
}
