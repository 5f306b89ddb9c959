import NIOCore

/// A command on its way to Redis with the promise its reply completes.
public struct RedisRequest: Sendable {
    public let command: RedisCommand
    public let promise: EventLoopPromise<RESPValue>?
}

/// Pipelines commands on one connection: writes each command as it comes,
/// flushes once per event-loop tick, and completes promises in reply order.
///
/// Pub/sub messages (`message` pushes) go to `onPush` instead of a promise.
/// A watchdog closes the connection when the oldest reply is overdue, so a
/// stuck Redis fails every caller fast instead of holding them.
final class RedisCommandHandler: ChannelDuplexHandler {
    typealias InboundIn = RESPValue
    typealias OutboundIn = RedisRequest
    typealias OutboundOut = ByteBuffer

    private struct Pending {
        let promise: EventLoopPromise<RESPValue>?
        let sentAt: NIODeadline
    }

    private var pending = CircularBuffer<Pending>(initialCapacity: 256)
    private var flushScheduled = false
    private var outbound: ByteBuffer
    private var watchdog: RepeatedTask?
    private let timeout: TimeAmount
    private let maxPending: Int
    private let onPush: (@Sendable (RESPValue) -> Void)?
    private var closedError: RedisError?

    init(timeout: TimeAmount, maxPending: Int, onPush: (@Sendable (RESPValue) -> Void)?) {
        precondition(maxPending > 0)
        self.timeout = timeout
        self.maxPending = maxPending
        self.onPush = onPush
        self.outbound = ByteBufferAllocator().buffer(capacity: 16 * 1024)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        outbound = context.channel.allocator.buffer(capacity: 16 * 1024)
        let interval = TimeAmount.nanoseconds(max(timeout.nanoseconds / 4, TimeAmount.milliseconds(1).nanoseconds))
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        watchdog = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            bound.value.handler.checkOverdue(context: bound.value.context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        watchdog?.cancel()
        watchdog = nil
        failAll(.connectionClosed)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        promise?.succeed()
        if let closedError {
            request.promise?.fail(RedisError.notSent(closedError.description))
            return
        }
        guard pending.count < maxPending else {
            request.promise?.fail(RedisError.overloaded)
            return
        }
        request.command.encode(into: &outbound)
        pending.append(Pending(promise: request.promise, sentAt: .now()))
        scheduleFlush(context: context)
    }

    func flush(context: ChannelHandlerContext) {
        flushOutbound(context: context)
    }

    /// One flush per tick: every command written during this tick of the
    /// event loop goes out in one syscall.
    private func scheduleFlush(context: ChannelHandlerContext) {
        guard !flushScheduled else { return }
        flushScheduled = true
        let loopBoundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.eventLoop.assumeIsolated().execute {
            self.flushScheduled = false
            self.flushOutbound(context: loopBoundContext.value)
        }
    }

    private func flushOutbound(context: ChannelHandlerContext) {
        guard outbound.readableBytes > 0 else { return }
        let chunk = outbound
        outbound = context.channel.allocator.buffer(capacity: 16 * 1024)
        context.writeAndFlush(wrapOutboundOut(chunk), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let value = unwrapInboundIn(data)
        if let onPush, isPush(value) {
            onPush(value)
            return
        }
        guard let head = pending.popFirst() else {
            context.fireErrorCaught(RedisError.unexpectedReply("reply with no command waiting"))
            context.close(promise: nil)
            return
        }
        if case .error(let message) = value {
            head.promise?.fail(RedisError.server(message))
        } else {
            head.promise?.succeed(value)
        }
    }

    private func isPush(_ value: RESPValue) -> Bool {
        guard case .array(let items) = value, let kind = items.first?.string else { return false }
        return (kind == "message" && items.count == 3) || (kind == "pmessage" && items.count == 4)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(.connectionClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        failAll((error as? RedisError) ?? .connectionClosed)
        context.close(promise: nil)
    }

    private func checkOverdue(context: ChannelHandlerContext) {
        guard let oldest = pending.first else { return }
        if NIODeadline.now() - oldest.sentAt > timeout {
            failAll(.timeout)
            context.close(promise: nil)
        }
    }

    private func failAll(_ error: RedisError) {
        if closedError == nil { closedError = error }
        while let head = pending.popFirst() {
            head.promise?.fail(error)
        }
    }
}
