import COpenSSL
import CSecProxyOpenSSL

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension SSLContextBox {
    /// Staples `response` to every handshake on this context whose client asks for certificate status,
    /// until the response's `nextUpdate` has passed by `clock`: a stale staple makes must-staple
    /// clients fail hard, no staple only makes them ask the responder (or fail softly).
    ///
    /// OpenSSL calls the status callback of the connection's current context, so an SNI context
    /// staples its own certificate's response, or none.
    func staple(_ response: TLSOCSPResponse, clock: @escaping @Sendable () -> Date) {
        let staple = OCSPStaple(response: response, clock: clock)
        self.keepAlive(staple)
        csp_ssl_ctx_set_status_callback(self.ctx, ocspStatusCallback, Unmanaged.passUnretained(staple).toOpaque())
    }
}

/// What the status callback reaches: the response and the clock it is judged by.
private final class OCSPStaple: Sendable {
    let response: TLSOCSPResponse
    let clock: @Sendable () -> Date

    init(response: TLSOCSPResponse, clock: @escaping @Sendable () -> Date) {
        self.response = response
        self.clock = clock
    }
}

/// OpenSSL's server status callback: hands the connection an `OPENSSL_malloc`ed copy of the response
/// (the `SSL` frees it). Running out of memory or a response past its `nextUpdate` means no staple,
/// not a failed handshake.
private func ocspStatusCallback(ssl: OpaquePointer?, arg: UnsafeMutableRawPointer?) -> Int32 {
    guard let ssl, let arg, csp_ssl_get_tlsext_status_type(ssl) == csp_tlsext_statustype_ocsp() else {
        return csp_ssl_tlsext_err_noack()
    }
    let staple = Unmanaged<OCSPStaple>.fromOpaque(arg).takeUnretainedValue()
    guard staple.response.isFresh(at: staple.clock()) else { return csp_ssl_tlsext_err_noack() }
    let der = staple.response.der
    let count = der.count
    guard let copy = csp_openssl_malloc(count) else { return csp_ssl_tlsext_err_noack() }
    der.withUnsafeBytes { copy.copyMemory(from: $0.baseAddress!, byteCount: count) }
    guard csp_ssl_set_tlsext_status_ocsp_resp(ssl, copy.assumingMemoryBound(to: UInt8.self), count) == 1 else {
        csp_openssl_free(copy)
        ERR_clear_error()
        return csp_ssl_tlsext_err_noack()
    }
    return csp_ssl_tlsext_err_ok()
}
