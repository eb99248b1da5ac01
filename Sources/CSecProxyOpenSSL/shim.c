#include "CSecProxyOpenSSL.h"
