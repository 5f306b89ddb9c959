import Logging
import NIOCore

/// What the two fronts' connection handlers share: they feed NIO's events to
/// their `ConnectionLifecycle` and carry out the actions it returns. Each
/// handler keeps only its codec (`start` takes one decoded frame up) and how
/// its answers leave (in order, or as soon as decided).
protocol LifecycleHandler: ChannelDuplexHandler where OutboundOut == ByteBuffer {
    associatedtype Frame
    var lifecycle: ConnectionLifecycle<Frame> { get set }
    var logger: Logger { get }
    /// How logs name one connection: "terminal connection", "iso8583 link".
    static var connectionName: String { get }
    /// Takes up one frame the lifecycle dispatched.
    func start(_ frame: Frame, context: ChannelHandlerContext)
}

extension LifecycleHandler {
    func perform(_ actions: [ConnectionLifecycle<Frame>.Action], context: ChannelHandlerContext) {
        for action in actions {
            switch action {
            case .dispatch(let frame):
                start(frame, context: context)
            case .resumeReads:
                context.read()
            case .flushLastAnswers:
                context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0))).assumeIsolated().whenComplete { _ in
                    self.perform(self.lifecycle.lastAnswersFlushed(), context: context)
                }
            case .closeOutputAndLinger:
                LingeringClose.start(context: context)
            case .close:
                context.close(promise: nil)
            }
        }
    }

    /// One flush per event-loop tick, however many answers were written in it.
    func scheduleFlush(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        context.eventLoop.assumeIsolated().execute {
            loopBound.value.handler.lifecycle.flushRan()
            loopBound.value.context.flush()
        }
    }

    func read(context: ChannelHandlerContext) {
        if lifecycle.readRequested() == .read { context.read() }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
            // Nothing sent for the idle timeout and nothing owed.
            let actions = lifecycle.readIdle()
            if !actions.isEmpty { logger.debug("closing an idle \(Self.connectionName)") }
            perform(actions, context: context)
            return
        }
        if event is ChannelShouldQuiesceEvent {
            perform(lifecycle.quiesce(), context: context)
            return
        }
        if event as? ChannelEvent == .inputClosed {
            perform(lifecycle.inputClosed(), context: context)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// The peer does not read its answers fast enough: the outbound buffer
    /// passed its high-water mark. Close rather than buffer without bound.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if !context.channel.isWritable {
            let actions = lifecycle.becameUnwritable()
            if !actions.isEmpty {
                logger.warning(
                    "closing a \(Self.connectionName) that does not read its answers",
                    metadata: ["remote": "\(context.remoteAddress.map { "\($0)" } ?? "-")"]
                )
            }
            perform(actions, context: context)
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        lifecycle.channelInactive()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        logger.debug("\(Self.connectionName) error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}
