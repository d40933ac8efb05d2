"""Adds every registered converge plugin's config package to Hydra's search path.

Hydra imports every module under the `hydra_plugins` namespace package and
registers the SearchPathPlugin subclasses it finds, so this one file is what
makes `data=vision/digits` resolve without the core knowing any plugin.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class ConvergeSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from converge import registry

        for plugin in registry.plugins().values():
            search_path.append(provider=f"converge-{plugin.name}", path=plugin.searchpath)
