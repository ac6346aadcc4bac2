"""Shared building blocks of the three kinds' specs and statuses.

Every model is camelCase on the wire (Kubernetes convention) and snake_case in Python. Unknown
fields are rejected, so a typo is an error instead of a silently ignored setting. Fractions are
strings (Kubernetes avoids floats in spec) parsed by `Decimal`.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator
from pydantic.alias_generators import to_camel

GROUP = "mlops.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
DECIMAL = r"^[0-9]+(\.[0-9]+)?$"
# a fraction in [0, 1]
FRACTION = r"^(0(\.[0-9]+)?|1(\.0+)?|\.[0-9]+)$"
QUANTITY = (r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
            r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
DIGEST = r"^sha256:[a-f0-9]{64}$"

Name = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
Decimal_ = Annotated[str, Field(pattern=DECIMAL, max_length=32)]
Fraction = Annotated[str, Field(pattern=FRACTION, max_length=32)]
Quantity = int | Annotated[str, Field(pattern=QUANTITY)]
Digest = Annotated[str, Field(pattern=DIGEST)]


class ApiModel(BaseModel):
    """Base of every spec/status model: camelCase aliases, unknown fields forbidden.

    `_exactly_one_of` lists groups of field names of which exactly one must be set; the same
    declaration becomes a `oneOf` of `required` in the generated CRD schema.
    """

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        frozen=False,
    )
    _exactly_one_of: ClassVar[tuple[tuple[str, ...], ...]] = ()
    _at_most_one_of: ClassVar[tuple[tuple[str, ...], ...]] = ()

    @model_validator(mode="after")
    def _check_one_of(self) -> ApiModel:
        # on every model a reconcile validates (a dozen per ModelDeployment): nothing built unless a group is broken
        for groups, exact in ((self._exactly_one_of, True), (self._at_most_one_of, False)):
            for group in groups:
                present = sum(getattr(self, f) is not None for f in group)
                if present > 1 or (exact and not present):
                    aliases = [type(self).model_fields[f].alias or f for f in group]
                    raise ValueError(f"exactly one of {', '.join(aliases)} must be set"
                                     if exact else f"at most one of {', '.join(aliases)} may be set")
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> Any:
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        alias = {name: (f.alias or name) for name, f in cls.model_fields.items()}
        if cls._exactly_one_of:
            target["x-exactly-one-of"] = [[alias[f] for f in g] for g in cls._exactly_one_of]
        if cls._at_most_one_of:
            target["x-at-most-one-of"] = [[alias[f] for f in g] for g in cls._at_most_one_of]
        return schema

    def wire(self) -> dict[str, Any]:
        """The object as it goes to the API: camelCase, unset optionals left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class LocalObjectReference(ApiModel):
    name: Name
    """Name of the object in the same namespace."""


class KeySelector(ApiModel):
    name: Name
    """Name of the ConfigMap or Secret in the same namespace."""
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]
    """Key inside it."""


class EnvVarSource(ApiModel):
    _exactly_one_of = (("secret_key_ref", "config_map_key_ref"),)
    secret_key_ref: KeySelector | None = None
    config_map_key_ref: KeySelector | None = None


class EnvVar(ApiModel):
    _at_most_one_of = (("value", "value_from"),)
    name: Annotated[str, Field(min_length=1, max_length=253, pattern=ENV_NAME)]
    value: str | None = None
    value_from: EnvVarSource | None = None


class ResourceRequirements(ApiModel):
    requests: dict[str, Quantity] | None = None
    limits: dict[str, Quantity] | None = None


class StorageAccess(ApiModel):
    """Where credentials for model and data storage come from: always the resource's own namespace."""

    secret_ref: LocalObjectReference | None = None
    """A Secret whose keys become environment variables (for S3: AWS_ACCESS_KEY_ID, …)."""
    service_account_name: Name | None = None
    """A ServiceAccount of this namespace to run the Pods as (workload identity)."""


class Condition(ApiModel):
    """A Kubernetes API convention condition."""

    type: Annotated[str, Field(min_length=1, max_length=316)]
    status: Annotated[str, Field(pattern=r"^(True|False|Unknown)$")]
    reason: Annotated[str, Field(max_length=1024)] = ""
    message: Annotated[str, Field(max_length=32768)] = ""
    last_transition_time: str | None = None
    observed_generation: Annotated[int, Field(ge=0)] | None = None


class StatusBase(ApiModel):
    """What every kind's status has."""

    observed_generation: int | None = None
    conditions: list[Condition] | None = None


Params = dict[str, JsonValue]
