import Dispatch
import Histogram
import NIOCore
import NIOPosix

public enum LoadGenerator {
    /// Connects, runs the load, and returns when every answer is in (or the
    /// drain timeout passed). Blocks the calling thread, which must not be an
    /// event loop; `onProgress` is called on it about once a second.
    public static func run(
        _ options: LoadOptions,
        onConnected: (Int) -> Void = { _ in },
        onProgress: (LoadProgress) -> Void = { _ in }
    ) throws -> LoadReport {
        precondition(!options.targets.isEmpty && options.connections > 0 && options.pipeline > 0 && options.rate >= 0)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, options.threads))
        defer { try? group.syncShutdownGracefully() }
        let loops = Array(group.makeIterator())
        let workers = try loops.map { loop in
            try loop.submit { NIOLoopBound(Worker(loop: loop, options: options), eventLoop: loop) }.wait()
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
                            try channel.pipeline.syncOperations.addHandler(LoadConnection(worker: worker.value, number: number))
                        }
                    }
                    .connect(host: target.host, port: target.port)
                    .flatMapErrorThrowing { throw LoadGeneratorError.cannotConnect(target, $0) }
            }
            _ = try EventLoopFuture.whenAllSucceed(futures, on: loops[0]).wait()
        }
        onConnected(options.connections)

        let start = NIODeadline.now() + .milliseconds(20)
        let results = workers.map { worker in
            worker.eventLoop.flatSubmit { worker.value.start(at: start) }
        }
        let all = EventLoopFuture.whenAllSucceed(results, on: loops[0])
        let finished = DispatchSemaphore(value: 0)
        all.whenComplete { _ in finished.signal() }
        while finished.wait(timeout: .now() + .seconds(1)) == .timedOut {
            let snapshots = try EventLoopFuture.whenAllSucceed(
                workers.map { worker in worker.eventLoop.submit { worker.value.snapshot() } }, on: loops[0]
            ).wait()
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
        for part in try all.wait() { report.merge(part) }
        return report
    }
}
