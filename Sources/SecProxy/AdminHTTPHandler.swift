import NIOCore
import NIOHTTP1
import NIOPosix

/// The last handler of an admin connection: turns each request into `AdminEndpoint`'s response.
///
/// Requests have no body (a request announcing one gets 413 and the connection closes); keep-alive as the
/// client asks. The response is computed on the thread pool (a scrape reads `/proc`), written back here.
/// `HTTPServerPipelineHandler` in front of it keeps pipelined requests in order.
final class AdminHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        case waitingForHead
        /// The head arrived; waiting for its `.end`.
        case receiving(HTTPRequestHead)
        /// The response is being computed or written.
        case responding
        /// Refused or closing: ignore the rest.
        case closing
    }

    private let endpoint: AdminEndpoint
    private let threadPool: NIOThreadPool
    private var state: State = .waitingForHead

    init(endpoint: AdminEndpoint, threadPool: NIOThreadPool) {
        self.endpoint = endpoint
        self.threadPool = threadPool
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch (unwrapInboundIn(data), state) {
        case (.head(let head), .waitingForHead):
            context.triggerUserOutboundEvent(AdminRequestGuard.Event.headReceived, promise: nil)
            if Self.announcesBody(head) {
                state = .closing
                write(
                    context: context, head: head,
                    response: .text(.payloadTooLarge, "request body not allowed"), keepAlive: false
                )
            } else {
                state = .receiving(head)
            }
        case (.body, _):
            // Only after a refused head (which closes) or a body the head did not announce: dropped.
            break
        case (.end, .receiving(let head)):
            state = .responding
            let endpoint = self.endpoint
            let method = head.method
            let uri = head.uri
            let context = NIOLoopBound(context, eventLoop: context.eventLoop)
            threadPool.runIfActive(eventLoop: context.value.eventLoop) {
                endpoint.respond(method: method, uri: uri)
            }.assumeIsolated().whenComplete { result in
                let response = (try? result.get()) ?? .text(.internalServerError, "internal error")
                self.write(context: context.value, head: head, response: response, keepAlive: head.isKeepAlive)
            }
        case (.head, _), (.end, _):
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Decoder errors were answered (400) by HTTPServerProtocolErrorHandler; anything else ends the connection.
        state = .closing
        context.close(promise: nil)
    }

    /// Whether the request says a body follows (a length above zero, or any transfer coding).
    static func announcesBody(_ head: HTTPRequestHead) -> Bool {
        if head.headers.contains(name: "transfer-encoding") { return true }
        return head.headers["content-length"].contains { ($0.trimmingCharacters(in: .whitespaces)) != "0" }
    }

    private func write(
        context: ChannelHandlerContext, head request: HTTPRequestHead, response: AdminEndpoint.Response,
        keepAlive: Bool
    ) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: String(response.body.count))
        headers.add(name: "Cache-Control", value: "no-store")
        if let allow = response.allow { headers.add(name: "Allow", value: allow) }
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        let head = HTTPResponseHead(version: request.version, status: response.status, headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if request.method != .HEAD, !response.body.isEmpty {
            var buffer = context.channel.allocator.buffer(capacity: response.body.count)
            buffer.writeBytes(response.body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        guard keepAlive, case .responding = state else {
            state = .closing
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
            return
        }
        // Ready for the next request before the end goes out: writing it makes HTTPServerPipelineHandler hand
        // over a pipelined request at once, from inside this call.
        state = .waitingForHead
        context.triggerUserOutboundEvent(AdminRequestGuard.Event.responseSent, promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}

@available(*, unavailable)
extension AdminHTTPHandler: Sendable {}
