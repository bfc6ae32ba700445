// Boost.JSON compiled into the fuzzer with its instrumentation.
#include <boost/json/src.hpp>
