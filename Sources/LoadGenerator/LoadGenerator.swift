import NIOConcurrencyHelpers
import Histogram
import NIOCore
import NIOPosix

public enum LoadGenerator {
    /// Connects, runs the load, and returns when every answer is in (or the
    /// drain timeout passed); `onProgress` is called about once a second.
    public static func run(
        _ options: LoadOptions,
        onConnected: (Int) -> Void = { _ in },
        onProgress: (LoadProgress) -> Void = { _ in }
    ) async throws -> LoadReport {
        precondition(!options.targets.isEmpty && options.connections > 0 && options.pipeline > 0 && options.rate >= 0)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, options.threads))
        let loops = Array(group.makeIterator())
        do {
            let report = try await run(options, loops: loops, onConnected: onConnected, onProgress: onProgress)
            try await group.shutdownGracefully()
            return report
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    private static func run(
        _ options: LoadOptions, loops: [EventLoop], onConnected: (Int) -> Void, onProgress: (LoadProgress) -> Void
    ) async throws -> LoadReport {
        var workers: [NIOLoopBound<Worker>] = []
        for loop in loops {
            workers.append(try await loop.submit { NIOLoopBound(Worker(loop: loop, options: options), eventLoop: loop) }.get())
        }

        // Connect in bounded batches so a large --connections does not
        // overflow the server's accept backlog.
        let batch = 256
        for first in stride(from: 0, to: options.connections, by: batch) {
            let futures = (first..<min(first + batch, options.connections)).map { number -> EventLoopFuture<Channel> in
                let worker = workers[number % workers.count]
                let target = options.targets[number % options.targets.count]
                return ClientBootstrap(group: loops[number % loops.count])
                    .connectTimeout(.seconds(5))
                    .channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(LoadConnection.decoder(for: options.wire))
                            try channel.pipeline.syncOperations.addHandler(LoadConnection(worker: worker.value, number: number))
                        }
                    }
                    .connect(host: target.host, port: target.port)
                    .flatMapErrorThrowing { throw LoadGeneratorError.cannotConnect(target, $0) }
            }
            _ = try await EventLoopFuture.whenAllSucceed(futures, on: loops[0]).get()
        }
        onConnected(options.connections)

        let start = NIODeadline.now() + .milliseconds(20)
        let results = workers.map { worker in
            worker.eventLoop.flatSubmit { worker.value.start(at: start) }
        }
        let all = EventLoopFuture.whenAllSucceed(results, on: loops[0])
        let finished = NIOLockedValueBox(false)
        all.whenComplete { _ in finished.withLockedValue { $0 = true } }
        while !(await Self.waitFor(finished, upTo: .seconds(1))) {
            let snapshots = try await EventLoopFuture.whenAllSucceed(
                workers.map { worker in worker.eventLoop.submit { worker.value.snapshot() } }, on: loops[0]
            ).get()
            var progress = LoadProgress(elapsed: NIODeadline.now() - start, sent: 0, answered: 0, errors: 0, recent: makeLatencyHistogram())
            for snapshot in snapshots {
                progress.sent += snapshot.sent
                progress.answered += snapshot.answered
                progress.errors += snapshot.errors
                progress.recent.add(snapshot.recent)
            }
            onProgress(progress)
        }
        var report = LoadReport()
        for part in try await all.get() { report.merge(part) }
        return report
    }

    /// True once `flag` is set, false after `limit` (checked every 10 ms,
    /// so the run ends promptly without a thread parked on a semaphore).
    private static func waitFor(_ flag: NIOLockedValueBox<Bool>, upTo limit: Duration) async -> Bool {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if flag.withLockedValue({ $0 }) { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return flag.withLockedValue { $0 }
    }
}
