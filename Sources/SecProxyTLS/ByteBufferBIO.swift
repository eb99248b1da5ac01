import COpenSSL
import CSecProxyOpenSSL
import NIOCore

/// The only bridge between NIO and OpenSSL: a custom `BIO` whose reads come straight out of the
/// ciphertext `ByteBuffer`s the channel delivered and whose writes append to one outbound
/// `ByteBuffer`, handed to the channel on flush. No memory BIO, no extra copy.
///
/// The `BIO` itself belongs to the `SSL` (`SSL_set_bio`); this object must outlive it, which
/// `TLSConnection` guarantees by owning both and freeing the `SSL` first.
final class ByteBufferBIO {
    /// The BIO, owned by the `SSL` it is attached to.
    let bio: OpaquePointer
    private let allocator: ByteBufferAllocator
    /// Ciphertext received and not yet consumed by OpenSSL.
    private var inbound: ByteBuffer?
    /// Ciphertext produced by OpenSSL and not yet handed to the channel.
    private var outbound: ByteBuffer?

    /// Creates the BIO with one reference, to be given to `SSL_set_bio`.
    init(allocator: ByteBufferAllocator) throws {
        ERR_clear_error()
        guard let bio = BIO_new(byteBufferBIOMethod.method) else {
            throw TLSError.drainingErrorQueue(operation: "BIO_new", fallback: "out of memory")
        }
        self.bio = bio
        self.allocator = allocator
        BIO_set_data(bio, Unmanaged.passUnretained(self).toOpaque())
        BIO_set_init(bio, 1)
    }

    /// Ciphertext bytes waiting to be read by OpenSSL.
    var inboundByteCount: Int {
        self.inbound?.readableBytes ?? 0
    }

    /// Queues ciphertext from the channel for OpenSSL to read.
    func receive(_ buffer: ByteBuffer) {
        if var existing = self.inbound, existing.readableBytes > 0 {
            // Rare: only when a previous read stopped early (close_notify, error).
            self.inbound = nil
            existing.writeImmutableBuffer(buffer)
            self.inbound = existing
        } else {
            self.inbound = buffer
        }
    }

    /// Drops inbound ciphertext (after a close_notify or a fatal error).
    func discardInbound() {
        self.inbound = nil
    }

    /// Takes the ciphertext produced so far, if any.
    func takeOutbound() -> ByteBuffer? {
        guard let buffer = self.outbound, buffer.readableBytes > 0 else { return nil }
        self.outbound = nil
        return buffer
    }

    /// Makes room for about `bytes` more ciphertext, so a big `SSL_write` does not reallocate per record.
    func reserveOutbound(_ bytes: Int) {
        if self.outbound == nil {
            self.outbound = self.allocator.buffer(capacity: bytes)
        } else {
            self.outbound!.reserveCapacity(minimumWritableBytes: bytes)
        }
    }

    // MARK: - BIO entry points

    fileprivate func read(into destination: UnsafeMutablePointer<CChar>, count: Int) -> Int32 {
        guard count > 0 else { return 0 }
        guard var buffer = self.inbound, buffer.readableBytes > 0 else {
            self.inbound = nil  // release the storage early; idle connections hold nothing
            csp_bio_set_retry_read(self.bio)
            return -1
        }
        self.inbound = nil  // keep the buffer uniquely referenced while we move its reader index
        let copied = buffer.withUnsafeReadableBytes { source -> Int in
            let n = min(source.count, count)
            UnsafeMutableRawPointer(destination).copyMemory(from: source.baseAddress!, byteCount: n)
            return n
        }
        buffer.moveReaderIndex(forwardBy: copied)
        if buffer.readableBytes > 0 {
            self.inbound = buffer
        }
        return Int32(copied)
    }

    fileprivate func write(from source: UnsafePointer<CChar>, count: Int) -> Int32 {
        guard count > 0 else { return 0 }
        var buffer = self.outbound ?? self.allocator.buffer(capacity: max(count, 4096))
        self.outbound = nil
        buffer.writeBytes(UnsafeRawBufferPointer(start: source, count: count))
        self.outbound = buffer
        return Int32(count)
    }
}

/// The process-wide `BIO_METHOD`, created once.
private struct ByteBufferBIOMethod: @unchecked Sendable {
    let method: OpaquePointer

    init() {
        let type = BIO_get_new_index() | BIO_TYPE_SOURCE_SINK
        guard let method = BIO_meth_new(type, "secproxy ByteBuffer BIO") else {
            fatalError("BIO_meth_new failed")
        }
        BIO_meth_set_read(method, byteBufferBIORead)
        BIO_meth_set_write(method, byteBufferBIOWrite)
        BIO_meth_set_ctrl(method, byteBufferBIOCtrl)
        BIO_meth_set_create(method, byteBufferBIOCreate)
        BIO_meth_set_destroy(method, byteBufferBIODestroy)
        self.method = method
    }
}

private let byteBufferBIOMethod = ByteBufferBIOMethod()

private func bioOwner(_ bio: OpaquePointer) -> ByteBufferBIO? {
    guard let data = BIO_get_data(bio) else { return nil }
    return Unmanaged<ByteBufferBIO>.fromOpaque(data).takeUnretainedValue()
}

private func byteBufferBIORead(bio: OpaquePointer?, buffer: UnsafeMutablePointer<CChar>?, length: Int32) -> Int32 {
    guard let bio, let buffer else { return -1 }
    csp_bio_clear_retry_flags(bio)
    guard let owner = bioOwner(bio) else { return -1 }
    return owner.read(into: buffer, count: Int(length))
}

private func byteBufferBIOWrite(bio: OpaquePointer?, buffer: UnsafePointer<CChar>?, length: Int32) -> Int32 {
    guard let bio, let buffer else { return -1 }
    csp_bio_clear_retry_flags(bio)
    guard let owner = bioOwner(bio) else { return -1 }
    return owner.write(from: buffer, count: Int(length))
}

private func byteBufferBIOCtrl(bio: OpaquePointer?, command: Int32, larg: Int, parg: UnsafeMutableRawPointer?) -> Int {
    guard let bio else { return 0 }
    switch command {
    case BIO_CTRL_FLUSH:
        // OpenSSL flushes after every flight and fails the handshake if this is not 1; the real
        // flush is ours, on `flush`/`channelReadComplete`.
        return 1
    case BIO_CTRL_GET_CLOSE:
        return Int(BIO_get_shutdown(bio))
    case BIO_CTRL_SET_CLOSE:
        BIO_set_shutdown(bio, Int32(truncatingIfNeeded: larg))
        return 1
    case BIO_CTRL_PENDING:
        guard let owner = bioOwner(bio) else { return 0 }
        return owner.inboundByteCount
    default:
        return 0
    }
}

private func byteBufferBIOCreate(bio: OpaquePointer?) -> Int32 {
    1
}

private func byteBufferBIODestroy(bio: OpaquePointer?) -> Int32 {
    guard let bio else { return 0 }
    BIO_set_data(bio, nil)
    BIO_set_init(bio, 0)
    return 1
}
