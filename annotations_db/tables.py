"""The database tables (SQLAlchemy declarative); their history is in `annotations_db/migrations`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, SmallInteger, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["AnnotationRow", "Base", "EditRow"]


class Base(DeclarativeBase):
    pass


class AnnotationRow(Base):
    """The current version of each annotation, one row per key."""

    __tablename__ = "annotations"
    __table_args__ = (UniqueConstraint("run_id", "neuron", "k", "virtual_neuron", name="uq_annotation_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    neuron: Mapped[int] = mapped_column(Integer)
    k: Mapped[int] = mapped_column(SmallInteger)
    virtual_neuron: Mapped[int] = mapped_column(SmallInteger)
    label: Mapped[str] = mapped_column(String(80))
    note: Mapped[str] = mapped_column(Text)
    verdict: Mapped[str] = mapped_column(String(16))
    author: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer)


class EditRow(Base):
    """Every saved version of every annotation (the history)."""

    __tablename__ = "annotation_edits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    annotation_id: Mapped[int] = mapped_column(ForeignKey("annotations.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(80))
    note: Mapped[str] = mapped_column(Text)
    verdict: Mapped[str] = mapped_column(String(16))
    author: Mapped[str] = mapped_column(String(200))
    edited_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
