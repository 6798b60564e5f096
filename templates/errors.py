"""Errors of the templates package; every message names the template, key or path at fault."""

from __future__ import annotations


class TemplateError(Exception):
    """Base of every error the templates package raises on purpose."""


class InvalidTemplateName(TemplateError, ValueError):
    pass


class TemplateNotFound(TemplateError, LookupError):
    pass


class TemplateExists(TemplateError):
    pass


class TemplateInUse(TemplateError):
    """The template is the shared lower layer of vservers that still exist."""


class MetadataError(TemplateError, ValueError):
    """A template's .conf is not valid TOML or has an unknown/invalid key."""


class UnsafeArchive(TemplateError):
    """A tarball member would make the host write outside the target directory."""


class PopulateError(TemplateError):
    pass


class UnsafePath(TemplateError):
    """A removal or mount was asked for a path it must never touch."""


class BuildError(TemplateError):
    pass
