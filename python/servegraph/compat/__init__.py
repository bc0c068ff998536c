"""The peers' model APIs, for classes written for them: `servegraph.compat.mlrun`
(`V2ModelServer`) and `servegraph.compat.seldon` (`SeldonComponent`, `SeldonResponse`).
Change the one import line; the rest of the class stays as it is."""
