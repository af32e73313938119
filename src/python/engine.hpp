// clusterfusion.Model's engine (src/python/engine.cpp): registers _EngineModel, backend_list, default_model_path.
#pragma once
#include <nanobind/nanobind.h>

namespace cf::py {
namespace nb = nanobind;
void bind_engine(nb::module_& m);
}  // namespace cf::py
