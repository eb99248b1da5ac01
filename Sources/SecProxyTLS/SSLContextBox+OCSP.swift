import COpenSSL
import CSecProxyOpenSSL

extension SSLContextBox {
    /// Staples `response` to every handshake on this context whose client asks for certificate status.
    ///
    /// OpenSSL calls the status callback of the connection's current context, so an SNI context
    /// staples its own certificate's response, or none.
    func staple(_ response: TLSOCSPResponse) {
        self.keepAlive(response)
        csp_ssl_ctx_set_status_callback(self.ctx, ocspStatusCallback, Unmanaged.passUnretained(response).toOpaque())
    }
}

/// OpenSSL's server status callback: hands the connection an `OPENSSL_malloc`ed copy of the response
/// (the `SSL` frees it). Running out of memory means no staple, not a failed handshake.
private func ocspStatusCallback(ssl: OpaquePointer?, arg: UnsafeMutableRawPointer?) -> Int32 {
    guard let ssl, let arg, csp_ssl_get_tlsext_status_type(ssl) == csp_tlsext_statustype_ocsp() else {
        return csp_ssl_tlsext_err_noack()
    }
    let response = Unmanaged<TLSOCSPResponse>.fromOpaque(arg).takeUnretainedValue()
    let count = response.der.count
    guard let copy = csp_openssl_malloc(count) else { return csp_ssl_tlsext_err_noack() }
    response.der.withUnsafeBytes { copy.copyMemory(from: $0.baseAddress!, byteCount: count) }
    guard csp_ssl_set_tlsext_status_ocsp_resp(ssl, copy.assumingMemoryBound(to: UInt8.self), count) == 1 else {
        csp_openssl_free(copy)
        return csp_ssl_tlsext_err_noack()
    }
    return csp_ssl_tlsext_err_ok()
}
