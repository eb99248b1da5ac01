import NIOCore
import SecProxyCore

/// One input: the first bytes a client sends on a listener with `accept_proxy_protocol = true`.
///
/// Besides crashes and memory errors, it checks the contract the decoder handler relies on when it calls
/// `parse` again as bytes arrive: a prefix of a complete header needs more data, bytes after a header do not
/// change it, a prefix of something invalid is never a header, and a parsed header's addresses survive
/// being encoded again (v1 and v2) and parsed back.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzProxyProtocol(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let allocator = ByteBufferAllocator()
    func parse(_ count: Int) -> ProxyProtocolParseResult {
        var buffer = allocator.buffer(capacity: count)
        buffer.writeBytes(UnsafeBufferPointer(rebasing: bytes[0..<count]))
        return ProxyProtocolHeader.parse(buffer)
    }

    let whole = parse(size)
    // Prefix lengths to compare: every one of the first 128 bytes (all of v1, v2's fixed part), then a few.
    var prefixes = Array(0..<min(size, 128))
    var step = 128
    while step < size {
        prefixes.append(step)
        step += step / 2
    }
    switch whole {
    case .header(let header, let consumed):
        precondition(consumed > 0 && consumed <= size, "consumed \(consumed) of \(size)")
        for length in prefixes {
            let partial = parse(length)
            if length < consumed {
                precondition(partial == .needMoreData, "prefix \(length) of a \(consumed)-byte header: \(partial)")
            } else {
                precondition(partial == whole, "bytes after the header changed it")
            }
        }
        precondition(parse(consumed) == whole)
        roundTrip(header, allocator: allocator)
    case .needMoreData:
        for length in prefixes {
            precondition(parse(length) == .needMoreData, "a prefix of an incomplete header is not incomplete")
        }
    case .invalid(let reason):
        precondition(!reason.isEmpty)
        for length in prefixes {
            if case .header = parse(length) { preconditionFailure("a prefix of invalid bytes parsed as a header") }
        }
    }
    return 0
}

/// Encodes `header` as v1 and as v2 and checks that both parse back to its addresses.
private func roundTrip(_ header: ProxyProtocolHeader, allocator: ByteBufferAllocator) {
    for encoded in [header.encodeV1(), header.encodeV2()] {
        guard case .header(let again, let consumed) = ProxyProtocolHeader.parse(encoded) else {
            preconditionFailure("an encoded header does not parse: \(header)")
        }
        precondition(consumed == encoded.readableBytes, "an encoded header is not consumed whole")
        precondition(again.addresses == header.addresses, "addresses changed: \(header.addresses) → \(again.addresses)")
    }
}
