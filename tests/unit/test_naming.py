"""Zato service names computed statically, to Zato's own rules (Service.get_name, support/3.2)."""

from __future__ import annotations

import pytest

from reconciler.zato.naming import ServiceDef, convert_impl_name, service_names, services_in


@pytest.mark.parametrize(("impl", "name"), [
    ("my_mod.GetCustomer", "my-mod.get-customer"),
    ("crm.Get", "crm.get"),
    ("billing_v2.CreateInvoiceXML", "billing-v2.create-invoice-xml"),
    ("api.ILikeToReadWSDLDocs", "api.i-like-to-read-wsdl-docs"),
    ("MyMod.GetX", "my-mod.get-x"),
    ("crm.Get_Customer", "crm.get_customer"),
    ("crm.HTTPGet", "crm.http-get"),
])
def test_implementation_names_are_uncamelified_as_zato_does(impl: str, name: str) -> None:
    assert convert_impl_name(impl) == name


SOURCE = '''
from zato.server.service import Service
from zato.server.service import AdminService as Admin
import zato.server.service as zs
from somewhere import Service as NotImported  # noqa

class GetCustomer(Service):
    def handle(self): pass

class Named(Service):
    name = "crm.customer.named"

class Child(Named):
    """inherits the name attribute, as getattr does"""

class _Base(Service):
    zato_dont_import = True

class FromBase(_Base):
    """hasattr sees the inherited zato_dont_import too: not deployed either"""

class Dotted(zs.Service):
    pass

class ViaAlias(Admin):
    pass

class Computed(Service):
    name = "crm." + "x"

class Helper:
    name = "not a service"

class Model(object):
    pass
'''


def test_services_of_a_module() -> None:
    found = services_in(SOURCE, "services/my_crm.py")
    assert [(s.name, s.class_name) for s in found] == [
        ("my-crm.get-customer", "GetCustomer"),
        ("crm.customer.named", "Named"),
        ("crm.customer.named", "Child"),
        ("my-crm.dotted", "Dotted"),
        ("my-crm.via-alias", "ViaAlias"),
        (None, "Computed"),
    ]
    assert found[0].line == 7 and found[0].fingerprint != found[1].fingerprint
    assert isinstance(found[0], ServiceDef)


def test_sorted_names_say_when_a_name_is_computed() -> None:
    assert service_names(SOURCE, "my_crm.py")[0] == "crm.customer.named"
    assert "my_crm.Computed (name computed at import)" in service_names(SOURCE, "my_crm.py")


def test_classes_defined_in_module_level_blocks_are_module_attributes_too() -> None:
    source = (
        "try:\n    from zato.server.service import Service\nexcept ImportError:\n    Service = object\n"
        "if True:\n    class InIf(Service):\n        pass\n"
        "def f():\n    class Inner(Service):\n        pass\n"
    )
    assert service_names(source, "blocks.py") == ("blocks.in-if",)


def test_a_module_without_services_and_one_that_does_not_parse() -> None:
    assert services_in("x = 1\n", "util.py") == []
    with pytest.raises(SyntaxError):
        services_in("class (:\n", "broken.py")
