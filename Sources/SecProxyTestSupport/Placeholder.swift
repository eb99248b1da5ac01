// SecProxyTestSupport
