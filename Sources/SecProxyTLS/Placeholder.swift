// SecProxyTLS
