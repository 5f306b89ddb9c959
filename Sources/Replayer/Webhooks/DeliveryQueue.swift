/// Which stored events of one endpoint to send, and when: a pure state
/// machine (events in, actions out, no I/O), driven by `WebhookDispatcher`.
///
/// - Order: an account has at most one delivery in flight, always its
///   oldest stored event; the next one waits until that one is delivered
///   or buried. A failing account holds back only its own later events.
/// - Concurrency: at most `maxInFlight` accounts at once.
/// - Retries: a failure schedules the same event again after an
///   exponential back-off with jitter (`retry.firstMilliseconds` doubling
///   to `retry.maxMilliseconds`, then half of it plus a random half); an
///   event stored longer than `retry.maxAgeSeconds` is buried (dead letter)
///   at its next failure.
struct DeliveryQueue {
    struct Item: Equatable, Sendable {
        /// The event's row in the outbox (ledger order within an account).
        let seq: Int64
        let account: String
        var attempts: Int
        /// When the event entered the outbox; the age limit counts from here.
        let enqueuedMilliseconds: Int64
        var dueMilliseconds: Int64
    }

    enum Outcome: Equatable {
        case delivered
        case failed(String)
    }

    enum Action: Equatable {
        /// Delivered: remove it from the outbox.
        case forget(Item)
        /// Failed: store its attempts and next due time.
        case reschedule(Item, error: String)
        /// Failed past the age limit: move it to the dead letters.
        case bury(Item, error: String)
    }

    private struct AccountQueue {
        var items: [Item] = []
        var head = 0
        var inFlight = false
        var isEmpty: Bool { head == items.count }
        var first: Item? { isEmpty ? nil : items[head] }

        mutating func popFirst() -> Item {
            precondition(!isEmpty)
            let item = items[head]
            head += 1
            if head == items.count {
                items.removeAll(keepingCapacity: false)
                head = 0
            } else if head >= 1_024 && head * 2 >= items.count {
                items.removeFirst(head)
                head = 0
            }
            return item
        }
    }

    let maxInFlight: Int
    let retry: WebhookConfiguration.Retry
    private var accounts: [String: AccountQueue] = [:]
    /// Accounts whose first item is waiting (not in flight), by due time.
    private var ready = MinHeap<Ready>()
    private(set) var inFlight = 0
    /// Events stored for this endpoint (in flight included).
    private(set) var count = 0
    /// The highest seq added: the outbox is read from there on.
    private(set) var lastSeq: Int64 = 0

    private struct Ready: Comparable {
        let due: Int64
        let seq: Int64
        let account: String
        static func < (lhs: Ready, rhs: Ready) -> Bool { (lhs.due, lhs.seq) < (rhs.due, rhs.seq) }
    }

    init(maxInFlight: Int, retry: WebhookConfiguration.Retry) {
        precondition(maxInFlight > 0)
        self.maxInFlight = maxInFlight
        self.retry = retry
    }

    /// A stored event, in outbox order (seq only grows).
    mutating func add(_ item: Item) {
        precondition(item.seq > lastSeq, "the outbox is read in seq order")
        lastSeq = item.seq
        count += 1
        var queue = accounts[item.account, default: AccountQueue()]
        let wasIdle = queue.isEmpty && !queue.inFlight
        queue.items.append(item)
        accounts[item.account] = queue
        if wasIdle { ready.push(Ready(due: item.dueMilliseconds, seq: item.seq, account: item.account)) }
    }

    /// The events to send now: the first event of each due account not in
    /// flight, oldest due first, up to the concurrency limit.
    mutating func take(now: Int64) -> [Item] {
        var taken: [Item] = []
        while inFlight < maxInFlight, let top = ready.peek, top.due <= now {
            _ = ready.pop()
            guard var queue = accounts[top.account], let first = queue.first else {
                preconditionFailure("a ready account has an event waiting")
            }
            precondition(!queue.inFlight && first.seq == top.seq)
            queue.inFlight = true
            accounts[top.account] = queue
            inFlight += 1
            taken.append(first)
        }
        return taken
    }

    /// The outcome of the delivery in flight for `account`.
    mutating func finished(account: String, outcome: Outcome, now: Int64, random: (ClosedRange<Int64>) -> Int64) -> Action {
        guard var queue = accounts[account], queue.inFlight, var first = queue.first else {
            preconditionFailure("an outcome for an account with nothing in flight")
        }
        queue.inFlight = false
        inFlight -= 1
        let action: Action
        switch outcome {
        case .delivered:
            action = .forget(queue.popFirst())
            count -= 1
        case .failed(let error):
            first.attempts += 1
            if now - first.enqueuedMilliseconds >= retry.maxAgeSeconds * 1_000 {
                _ = queue.popFirst()
                action = .bury(first, error: error)
                count -= 1
            } else {
                first.dueMilliseconds = now + delay(afterAttempts: first.attempts, random: random)
                queue.items[queue.head] = first
                action = .reschedule(first, error: error)
            }
        }
        if let next = queue.first {
            ready.push(Ready(due: next.dueMilliseconds, seq: next.seq, account: account))
            accounts[account] = queue
        } else {
            accounts[account] = nil
        }
        return action
    }

    /// `first · 2^(attempts-1)`, capped, then half of it plus a random half.
    func delay(afterAttempts attempts: Int, random: (ClosedRange<Int64>) -> Int64) -> Int64 {
        precondition(attempts > 0)
        let doublings = min(attempts - 1, 40)
        let full = min(retry.firstMilliseconds << Int64(doublings), retry.maxMilliseconds)
        return full / 2 + random(0...(full - full / 2))
    }

    /// When the next waiting event is due (nil: nothing waits, or all is in flight).
    var nextDue: Int64? { ready.peek?.due }

    /// Accounts with stored events.
    var accountCount: Int { accounts.count }

    /// The oldest time an event still stored entered the outbox (nil: none).
    var oldestEnqueued: Int64? { accounts.values.compactMap { $0.first?.enqueuedMilliseconds }.min() }
}

/// A binary min-heap.
struct MinHeap<Element: Comparable> {
    private var items: [Element] = []

    var isEmpty: Bool { items.isEmpty }
    var count: Int { items.count }
    var peek: Element? { items.first }

    mutating func push(_ element: Element) {
        items.append(element)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child] < items[parent] else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Element? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var parent = 0
        while true {
            let left = parent * 2 + 1
            let right = left + 1
            var smallest = parent
            if left < items.count && items[left] < items[smallest] { smallest = left }
            if right < items.count && items[right] < items[smallest] { smallest = right }
            if smallest == parent { break }
            items.swapAt(parent, smallest)
            parent = smallest
        }
        return top
    }
}
